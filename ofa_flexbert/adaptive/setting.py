"""An inference setting: which mode runs, class k -> width, the depth, the exit rule, a cascade's
subnets and thresholds (pure, no framework).

Why one module: the same record is given as flags (``--w_dynamic --width_mult_list ...``), written by
``--stage search`` as an ``--inference_config`` entry, read by ``--stage infer`` and ``--stage
export``, recorded in an export's manifest and run by the predictors.  :class:`Plan` is that record,
built by keyword with the flags' own field names; :meth:`Plan.from_entry` / :meth:`Plan.to_entry`
are the one conversion to and from the JSON entry, and :func:`read_inference_config` the one reader
of the file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from ofa_flexbert.config.checks import check_gate_threshold
from ofa_flexbert.errors import UserError


class Mode(str, Enum):
    """The inference modes: the reference's four and the confidence cascade.  A ``str``: JSON files
    hold the plain name."""

    STATIC = "static"          # one subnet for every input
    W_DYNAMIC = "w_dynamic"    # gates pick each block's width per input
    D_DYNAMIC = "d_dynamic"    # one width; inputs leave early at the off-ramps
    WD_DYNAMIC = "wd_dynamic"  # both
    CASCADE = "cascade"        # static subnets in turn; a confident input stops (adaptive/cascade.py)

    def __str__(self) -> str:  # the name users type, in messages and f-strings alike
        return self.value

    __format__ = str.__format__

    @property
    def gated(self) -> bool:
        """Whether the mode's widths come from the gates."""
        return self in (Mode.W_DYNAMIC, Mode.WD_DYNAMIC)

    @property
    def can_exit(self) -> bool:
        """Whether the mode may retire inputs at the off-ramps (with ``early_exit``)."""
        return self in (Mode.D_DYNAMIC, Mode.WD_DYNAMIC)

    @property
    def label(self) -> str:
        """The family's name in tables and plots (``static grid``, ``wd-dynamic``)."""
        return "static grid" if self is Mode.STATIC else self.value.replace("_", "-")


MODES = tuple(m.value for m in Mode)
QUANTIZED = "int8"  # an entry's ``quantize`` when the setting is deployed as its INT8 export (deploy/quantize.py)
# The families settings are compared in (fronts, plots, tables): each mode, and static subnets in their INT8
# form (--stage search --quantize int8), which cost other milliseconds and score other metrics than their twins.
Family = tuple[Mode, Optional[str]]
FAMILIES: tuple[Family, ...] = tuple((m, None) for m in Mode) + ((Mode.STATIC, QUANTIZED),)


def family_of(row: dict[str, Any]) -> Family:
    """The family of a search row (or an --inference_config entry): its mode and its ``quantize``."""
    return Mode(row["mode"]), row.get("quantize")


def family_label(family: Family) -> str:
    """``static grid``, ``wd-dynamic``, ``static grid INT8``: a family's name in tables and plots."""
    mode, quantize = family
    return mode.label + (f" {quantize.upper()}" if quantize else "")
# The keys of an --inference_config entry: the flags that make a setting (the reference's file format).
ENTRY_KEYS = ("mode", "width_mult_list", "depth_mult", "early_exit", "exit_threshold", "normalized_entropy",
              "gate_threshold", "cascade_depths", "cascade_thresholds", "quantize")


@dataclass(frozen=True)
class Plan:
    """What runs: the mode, class k -> width (one width for a static or d-dynamic plan), the depth,
    the exit rule, the gates' rule (``gate_threshold`` None: argmax; else the cumulative-probability
    threshold of ``gate.settings.choose_classes``) and --fixed_gate (every gate decision replaced by
    this width; gates do not run).  ``quantize``: ``"int8"`` when the setting is meant to run as its INT8
    export (``--stage export`` then writes that form too; ``--stage infer`` runs the float model).

    A cascade's ``widths`` are its subnets' widths in the order they run, ``depths`` their depths
    (one each) and ``thresholds`` the entropy below which an input stops after subnet s (one per
    subnet but the last); ``normalized_entropy`` applies to them as to exits.
    """

    mode: Mode
    widths: tuple[float, ...]
    depth_mult: float = 1.0
    early_exit: bool = False
    exit_threshold: float = 0.0
    normalized_entropy: bool = False
    fixed_gate: Optional[float] = None
    gate_threshold: Optional[float] = None
    depths: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    quantize: Optional[str] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.quantize not in (None, QUANTIZED):
            raise ValueError(f"quantize must be {QUANTIZED} or absent, got {self.quantize!r}")
        object.__setattr__(self, "widths", tuple(float(w) for w in self.widths))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        check_gate_threshold(self.gate_threshold)
        if self.mode is Mode.CASCADE:
            depths = self.depths or (1.0,) * len(self.widths)
            object.__setattr__(self, "depths", tuple(float(d) for d in depths))
            if len(self.widths) < 2 or len(self.depths) != len(self.widths) or len(self.thresholds) != len(self.widths) - 1:
                raise ValueError(f"a cascade needs two or more subnets, one depth each and one threshold between two: "
                                 f"got {len(self.widths)} widths, {len(self.depths)} depths, "
                                 f"{len(self.thresholds)} thresholds")

    @property
    def stages(self) -> list[tuple[float, float]]:
        """A cascade's subnets, (width, depth), in the order they run."""
        return list(zip(self.widths, self.depths))

    @property
    def gated(self) -> bool:
        """Whether gates run: a gated mode whose decisions are not fixed."""
        return self.mode.gated and self.fixed_gate is None

    @property
    def exits(self) -> bool:
        """Whether inputs may leave early: an exiting mode with ``early_exit`` on."""
        return self.early_exit and self.mode.can_exit

    def replace(self, **changes: Any) -> "Plan":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> "Plan":
        """The plan of an --inference_config entry (missing keys take the flags' defaults)."""
        return cls(mode=entry["mode"], widths=tuple(entry["width_mult_list"]),
                   depth_mult=float(entry.get("depth_mult", 1.0)), early_exit=bool(entry.get("early_exit", False)),
                   exit_threshold=float(entry.get("exit_threshold", 0.0)),
                   normalized_entropy=bool(entry.get("normalized_entropy", False)),
                   gate_threshold=None if entry.get("gate_threshold") is None else float(entry["gate_threshold"]),
                   depths=tuple(entry.get("cascade_depths", ())), thresholds=tuple(entry.get("cascade_thresholds", ())),
                   quantize=entry.get("quantize"))

    def to_entry(self) -> dict[str, Any]:
        """The --inference_config entry of this plan: the exit rule only when inputs exit, the gate
        threshold only when gates run with one, a cascade's depths and thresholds only for a cascade."""
        entry: dict[str, Any] = {"mode": self.mode.value, "width_mult_list": list(self.widths),
                                 "depth_mult": self.depth_mult, "early_exit": self.exits}
        if self.exits:
            entry.update(exit_threshold=self.exit_threshold, normalized_entropy=self.normalized_entropy)
        if self.gated and self.gate_threshold is not None:
            entry["gate_threshold"] = self.gate_threshold
        if self.mode is Mode.CASCADE:
            entry.update(cascade_depths=list(self.depths), cascade_thresholds=list(self.thresholds),
                         normalized_entropy=self.normalized_entropy)
        if self.quantize is not None:
            entry["quantize"] = self.quantize
        return entry

    def describe(self) -> str:
        """``wd_dynamic 0.25,0.5,0.75,1 g=0.6 t=0.2``, ``cascade 0.25,0.5d0.75,1 t=0.3,0.2`` -- the setting in
        one short phrase."""
        if self.mode is Mode.CASCADE:
            return (f"{self.mode} " + ",".join(f"{w:g}" + (f"d{d:g}" if d != 1.0 else "") for w, d in self.stages)
                    + " t=" + ",".join(f"{t:g}" for t in self.thresholds) + (f" {self.quantize}" if self.quantize else ""))
        text = f"{self.mode} " + ",".join(f"{w:g}" for w in self.widths)
        if self.depth_mult != 1.0:
            text += f" d{self.depth_mult:g}"
        if self.gated and self.gate_threshold is not None:
            text += f" g={self.gate_threshold:g}"
        if self.early_exit:
            text += f" t={self.exit_threshold:g}"
        if self.quantize:
            text += f" {self.quantize}"
        return text


def read_inference_config(path: str, task: str) -> dict[str, Any]:
    """The ``task`` entry of an --inference_config file (the format --stage search writes), checked.

    A one-line error names the file and line for invalid JSON, a missing task, an unknown key or
    mode; keys starting with ``_`` are comments.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UserError(f"--inference_config {path}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--inference_config {path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    tasks = [k for k in data if not k.startswith("_")] if isinstance(data, dict) else []
    if task not in tasks:
        raise UserError(f"--inference_config {path}: no settings for {task} (it has {', '.join(tasks) or 'none'})")
    entry = data[task]
    unknown = set(entry) - set(ENTRY_KEYS) if isinstance(entry, dict) else {"(not an object)"}
    if unknown:
        raise UserError(f"--inference_config {path}: {task}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"expected {', '.join(sorted(ENTRY_KEYS))}")
    if entry.get("mode") not in MODES:
        raise UserError(f"--inference_config {path}: {task}: mode must be one of {', '.join(MODES)}, "
                        f"got {entry.get('mode')!r}")
    try:
        Plan.from_entry(entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--inference_config {path}: {task}: not a setting ({exc})") from None
    return entry


def entry_of(row: dict[str, Any]) -> dict[str, Any]:
    """The --inference_config entry held in a larger record (a search_results.json row, a manifest's setting)."""
    return {k: row[k] for k in ENTRY_KEYS if k in row}
