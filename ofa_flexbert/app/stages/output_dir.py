"""The --output_dir policy: never overwrite a stage's own input, never silently replace an earlier run.

HuggingFace's run_glue.py refuses a non-empty output folder the same way (``--overwrite_output_dir``);
the reference's final fine-tuning in place (``--model_dir D --output_dir D``) is the one exception.
"""
from __future__ import annotations

import os

from ofa_flexbert.config import RunArgs
from ofa_flexbert.errors import UserError
from ofa_flexbert.store.outputs import RUN_FILES, read_run_info
from ofa_flexbert.train import checkpoint


def check_output_dir(args: RunArgs) -> None:
    """--output_dir must be a directory we can create, and not the input model's own directory."""
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserError(f"--output_dir {args.output_dir}: exists and is not a directory")
    if fine_tunes_in_place(args):
        check_in_place(args)
    elif os.path.realpath(args.output_dir) == os.path.realpath(args.model_dir):
        raise UserError(f"--output_dir {args.output_dir}: is the --model_dir; write the stage's output elsewhere "
                        "(it would overwrite its own input)")
    if args.resume and not checkpoint.exists(args.output_dir):
        raise UserError(f"--resume: no checkpoint in {checkpoint.path(args.output_dir)} (nothing to resume)")
    check_fresh(args)


def check_fresh(args: RunArgs) -> None:
    """Refuse to start a new run where an earlier run left its work, unless told to replace or continue it.

    A typo in --output_dir must not cost hours of training: a fresh run clears the old checkpoint at
    once and replaces the old model at its first evaluation.  HuggingFace's run_glue.py refuses a
    non-empty output folder the same way (``--overwrite_output_dir``).
    """
    if args.resume or args.overwrite_output_dir or not os.path.isdir(args.output_dir) or fine_tunes_in_place(args):
        return
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(args.output_dir, name))]
    if held:
        raise UserError(f"--output_dir {args.output_dir}: holds an earlier run's {held[0]}; pass --overwrite_output_dir "
                        "to replace it, or --resume to continue an interrupted run")


def fine_tunes_in_place(args: RunArgs) -> bool:
    """The reference's final command (``--model_dir $WD_BERT --output_dir $WD_BERT``): final fine-tuning
    writes into its input directory, which it may do because it replaces the model only by a better one."""
    return (args.stage == "final" and bool(args.model_dir) and bool(args.output_dir)
            and os.path.realpath(args.output_dir) == os.path.realpath(args.model_dir))


def check_in_place(args: RunArgs) -> None:
    """Final fine-tuning in place starts only from a finished model (or resumes its own interrupted run).

    The input stays as it is until a fine-tuned model scores higher on dev; what goes is the input
    run's resume checkpoint, which a finished run no longer needs -- so an unfinished one is refused.
    """
    info = read_run_info(args.model_dir)
    if not info or info.get("complete") is not False:
        return
    if args.resume and info.get("stage") == "final":
        return
    hint = "pass --resume to continue it" if info.get("stage") == "final" else "finish or --resume it first"
    raise UserError(f"--output_dir {args.output_dir}: final fine-tuning in place needs a finished model, but the "
                    f"{info.get('stage')} run in {args.model_dir} did not finish ({hint})")
