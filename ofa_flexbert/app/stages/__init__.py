"""The stages: each turns --model_dir into a model or results in --output_dir (``store/outputs.py`` names
every file).

:func:`resolve_stages` turns flags into the resolved arguments of one stage, or of the ``--stage all``
chain (every folder checked before the first stage runs); :func:`run` runs them.  A stage module is
imported only when its stage runs, so ``--stage infer`` never imports paddleslim.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable

from ofa_flexbert.adaptive.setting import MODES
from ofa_flexbert.config import RunArgs, resolve
from ofa_flexbert.store.outputs import INFERENCE_CONFIG
from .inputs import require
from .output_dir import check_fresh
from ofa_flexbert.app.report import StageReport

ORDER = ("finetune", "width", "depth", "final", "gate", "search", "infer")  # what --stage all chains
READERS = ("search", "infer")  # stages that read the last model and write none: the next reads the same model


# Each stage's module and function, imported only when the stage runs (so --stage infer never imports
# paddleslim, which only the training stages need).
IMPLEMENTED: dict[str, tuple[str, str]] = {"finetune": ("finetune", "run"), "width": ("width", "run"),
                                           "depth": ("depth", "run_depth"), "final": ("depth", "run_final"),
                                           "gate": ("gate", "run"), "infer": ("infer", "run"),
                                           "search": ("search", "run"), "export": ("export", "run"),
                                           "profile": ("profile", "run")}


def resolve_stages(flags: dict[str, Any]) -> list[RunArgs]:
    """The resolved arguments of every stage the flags ask for, all validated before any runs.

    ``--stage all`` chains every implemented stage into <output_dir>/<stage>: each training
    stage reads the previous one's model; search and infer read the last model (the gated one),
    and infer runs the setting search chose (its inference_config.json) unless the flags name a
    mode or a config.  Each stage resolves the flags afresh, so it gets its own ``stages.<stage>``
    section of the YAML config.
    """
    args = resolve(flags)
    if args.stage != "all":
        return [args]
    require(args, "model_dir", "output_dir")
    chain, model_dir = [], args.model_dir
    stages = tuple(s for s in ORDER if s in IMPLEMENTED)
    chosen = {} if flags.get("inference_config") or any(flags.get(m) for m in MODES) else \
        {"inference_config": os.path.join(args.output_dir, "search", INFERENCE_CONFIG)}
    for stage in stages:
        output_dir = os.path.join(args.output_dir, stage)
        extra = chosen if stage == "infer" else {}
        resolved = resolve({**flags, "stage": stage, "model_dir": model_dir, "output_dir": output_dir, **extra})
        chain.append(dataclasses.replace(resolved, chain=stages))
        check_fresh(chain[-1])  # before any stage runs: a refusal at the last stage would come hours late
        if stage not in READERS:
            model_dir = output_dir
    return chain


def run(flags: dict[str, Any]) -> list[StageReport]:
    """Resolve the flags (:func:`resolve_stages`) and run the stage or stages they name."""
    return [run_stage(args) for args in resolve_stages(flags)]


def run_stage(args: RunArgs) -> StageReport:
    """Run the single stage ``args.stage`` (``config.validate`` checked the name)."""
    module, function = IMPLEMENTED[args.stage]
    stage: Callable[[RunArgs], StageReport] = getattr(importlib.import_module(f".{module}", __package__), function)
    return stage(args)
