"""Stages: each turns --model_dir into a model in --output_dir (see outputs.py for the contract).

``run_stage`` dispatches; a stage that does not exist yet is a clean error, not a crash.
"""
from __future__ import annotations

import os
from typing import Callable

from ..config import RunArgs
from ..errors import UserError
from .common import StageReport

ORDER = ("finetune", "width", "depth", "final", "gate")  # what --stage all chains
PLANNED = {"width": "issue #3", "depth": "issue #4", "final": "issue #4", "gate": "a later issue",
           "infer": "a later issue", "export": "a later issue"}


def _finetune(args: RunArgs) -> StageReport:
    from .finetune import run

    return run(args)


IMPLEMENTED: dict[str, Callable[[RunArgs], StageReport]] = {"finetune": _finetune}


def run_stage(args: RunArgs) -> list[StageReport]:
    """Run ``args.stage`` (or, for ``all``, every implemented stage in order, chained)."""
    if args.stage == "all":
        return run_all(args)
    if args.stage not in IMPLEMENTED:
        raise UserError(f"--stage {args.stage}: not implemented yet (planned in {PLANNED[args.stage]}); "
                        f"available: {', '.join(IMPLEMENTED)}")
    return [IMPLEMENTED[args.stage](args)]


def run_all(args: RunArgs) -> list[StageReport]:
    """Chain the implemented stages: <output_dir>/<stage>, each reading the previous output."""
    import dataclasses

    if not args.output_dir:
        raise UserError("--output_dir is required")
    reports, model_dir = [], args.model_dir
    for stage in ORDER:
        if stage not in IMPLEMENTED:
            continue
        stage_args = dataclasses.replace(args, stage=stage, model_dir=model_dir,
                                         output_dir=os.path.join(args.output_dir, stage))
        reports.append(IMPLEMENTED[stage](stage_args))
        model_dir = stage_args.output_dir
    return reports
