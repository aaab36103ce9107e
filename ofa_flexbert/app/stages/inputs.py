"""Checks of a stage's inputs against its flags: required flags, the model's tokenizer, positions and pooling."""
from __future__ import annotations

import json
import logging
import os

from ofa_flexbert.config import RunArgs
from ofa_flexbert.errors import UserError
from ofa_flexbert.train import distributed

logger = logging.getLogger("ofa_flexbert")


def require(args: RunArgs, *names: str) -> None:
    """UserError naming the first of ``names`` (flags) that was not given."""
    for name in names:
        if not getattr(args, name):
            raise UserError(f"--{name} is required for --stage {args.stage}")


def check_lower_case(args: RunArgs, tokenizer) -> None:
    """--do_lower_case (a reference flag) against the tokenizer saved with the model, which decides:
    lower-casing is part of what the model was trained on, so a flag cannot change it."""
    actual = getattr(getattr(tokenizer, "basic_tokenizer", None), "do_lower_case", None)
    if args.do_lower_case is None or actual is None or actual == args.do_lower_case or not distributed.is_main():
        return
    logger.warning(f"--{'' if args.do_lower_case else 'no-'}do_lower_case: the tokenizer in {args.model_dir} "
                   f"{'keeps case' if args.do_lower_case else 'lower-cases'}, as the model was trained; it is used as saved")


def check_sequence_length(args: RunArgs) -> None:
    """--max_seq_length must fit the model's position table (else a mid-training index error)."""
    try:
        with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as fh:
            positions = json.load(fh).get("max_position_embeddings")
    except (OSError, ValueError):
        return  # load_model reports unreadable model directories
    if isinstance(positions, int) and args.max_seq_length > positions:
        raise UserError(f"--max_seq_length {args.max_seq_length}: the model in {args.model_dir} has only "
                        f"{positions} positions")


def check_pooling(args: RunArgs) -> str:
    """The pooling the stage's model uses: --pooling at finetune, else the input model's (a different --pooling is refused).

    Pooling is part of what a model computes: a width or depth stage that switched it would
    distil and evaluate a different function from the one its teacher learned.
    """
    from ofa_flexbert.store.models import recorded_pooling

    recorded = recorded_pooling(args.model_dir)
    if args.stage == "finetune":
        return args.pooling or recorded
    if args.pooling and args.pooling != recorded:
        raise UserError(f"--pooling {args.pooling}: the model in {args.model_dir} pools {recorded} (its config.json); "
                        "pooling is chosen at --stage finetune")
    return recorded
