"""Where a run's values come from: defaults < configs/<task>.yaml (top level, then ``stages.<stage>``) < flags.

The YAML file holds per-task values; its ``stages:`` section holds per-stage values (e.g. the gate
stage's learning rate 2e-4 against 2e-5 elsewhere).  A flag given on the command line always wins.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Optional

import yaml

from ofa_flexbert.errors import UserError
from ofa_flexbert.glue.tasks import get_task  # the single list of tasks

from .args import CONFIG_DIR, FIELD_TYPES, FIELDS, HELP_GROUPS, STAGES, TRAINING_PHASES, RunArgs
from .checks import validate


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2 (our bad-input contract)."""

    def error(self, message: str):  # noqa: D401 -- argparse API
        raise UserError(f"{self.prog}: {message}")


def _parse_float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _parse_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunArgs field, in --help's sections; defaults are None so we can tell which flags were given."""
    sections = {key: parser.add_argument_group(title) for key, title in HELP_GROUPS.items() if title}
    for name, f in FIELDS.items():
        kind = FIELD_TYPES[name]
        names = [f"--{name}", *f.metadata["aliases"]]
        group = sections[f.metadata["group"]]
        if kind in (bool, Optional[bool]):
            group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f.metadata["help"])
        elif kind == list[float]:
            group.add_argument(*names, dest=name, type=_parse_float_list, default=None, metavar="W1,W2,...",
                                help=f.metadata["help"])
        elif kind == list[int]:
            group.add_argument(*names, dest=name, type=_parse_int_list, default=None, metavar="I1,I2,...",
                                help=f.metadata["help"])
        else:
            base = {int: int, float: float, Optional[int]: int, Optional[float]: float}.get(kind, str)
            group.add_argument(*names, dest=name, type=base, default=None, help=f.metadata["help"])


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert a YAML value to the field's type (YAML reads ``2e-5`` as a string)."""
    kind = FIELD_TYPES[name]
    try:
        if kind in (bool, Optional[bool]):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == list[float]:
            return _parse_float_list(",".join(map(str, value)) if isinstance(value, list) else value)
        if kind == list[int]:
            return _parse_int_list(",".join(map(str, value)) if isinstance(value, list) else value)
        if value is None and kind in (Optional[int], Optional[float]):
            return None
        kind_of_value = {Optional[int]: int, Optional[float]: float}.get(kind, kind)
        if kind_of_value in (int, float) and isinstance(value, bool):
            raise ValueError  # YAML's true is not 1
        if kind_of_value is int:
            return int(str(value))  # as on the command line: 2.5 and 2.0 are not integers
        if kind_of_value is float:
            return float(value)
        return None if value is None else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise UserError(f"{source}: '{name}: {value}' is not a valid {getattr(kind, '__name__', kind)}") from None


def load_yaml_defaults(path: str, stage: Optional[str]) -> dict[str, Any]:
    """Top-level keys of ``path``, overlaid with its ``stages: {stage: {...}}`` section.

    Every section is validated, whichever stage runs: a misspelt key or stage name in the depth
    section must fail the width run that precedes it, not surface hours later (or never).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of flag names to values")
    stages = data.pop("stages", {}) or {}
    if not isinstance(stages, dict):
        raise UserError(f"{path}: 'stages' must map stage names to settings")
    sections = {"": data}
    for name, section in stages.items():  # every section is checked, not only the running stage's
        if name not in STAGES:
            raise UserError(f"{path}: unknown stage 'stages.{name}' (expected one of {', '.join(STAGES)})")
        if section is not None and not isinstance(section, dict):
            raise UserError(f"{path}: 'stages.{name}' must map flag names to values")
        sections[name] = section or {}
    checked = {name: {key: _coerce_known(key, value, path) for key, value in section.items()}
               for name, section in sections.items()}
    return {**checked[""], **checked.get(stage, {})}


def _coerce_known(key: str, value: Any, path: str) -> Any:
    """:func:`_coerce` for a key that must be a flag name."""
    if key not in FIELDS:
        raise UserError(f"{path}: unknown key '{key}' (expected flag names such as learning_rate)")
    return _coerce(key, value, path)


def resolve(flags: dict[str, Any]) -> RunArgs:
    """Merge defaults, the task's YAML file and the given flags; validate the result."""
    given = {k: v for k, v in flags.items() if v is not None and k in FIELDS}
    if given.get("do_eval") and not given.get("do_train") and not given.get("stage") \
            and not given.get("training_phase"):  # the reference's train_gate.py --do_eval: inference
        given["stage"] = "infer"
    if given.get("training_phase") and not given.get("stage"):
        phase = given["training_phase"]
        if phase not in TRAINING_PHASES:
            raise UserError(f"--training_phase: unknown phase '{phase}'; expected one of: {', '.join(TRAINING_PHASES)}")
        given["stage"] = TRAINING_PHASES[phase]
    if not given.get("task"):
        raise UserError("--task is required (e.g. --task rte)")
    task = get_task(given["task"])
    config_path = given.get("config") or os.path.join(CONFIG_DIR, f"{task.name}.yaml")
    merged = load_yaml_defaults(config_path, given.get("stage"))
    merged.update(given)
    merged["task"] = task.name
    merged["config"] = config_path
    args = RunArgs(**merged)
    validate(args)
    return args
