"""How every stage begins: the process state (patches, device, process group, seeds, threads), then
the input checks, all before --output_dir is touched.

Order matters for the bad-input contract: everything that can fail on user input (task, files,
model directory) is read before the output directory is touched, so a failed run never
overwrites what an earlier run wrote.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import paddle

import patches

from ofa_flexbert.app.console import keep_root_handlers_off_our_lines, quiet_libraries
from ofa_flexbert.config import RunArgs, no_effect_notes
from ofa_flexbert.errors import UserError
from ofa_flexbert.glue.tasks import TaskSpec, get_task
from ofa_flexbert.train import distributed

from .inputs import check_lower_case, check_pooling, check_sequence_length, require
from .output_dir import check_output_dir

logger = logging.getLogger("ofa_flexbert")


def setup(args: RunArgs) -> TaskSpec:
    """Patches, device, process group and seeds: the process state a stage starts from.

    Every rank seeds alike, so models built here (e.g. a fresh classifier) are identical on
    all ranks; the training loop gives each rank its own dropout stream.
    """
    patches.apply()
    quiet_libraries(args.verbose)
    keep_root_handlers_off_our_lines()  # paddle's root handler came with paddle, maybe after the console was set up
    device = "cpu" if args.cpu else args.device
    if device:
        try:
            paddle.set_device(device)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"--device {device}: {str(exc).splitlines()[0]}") from None
    distributed.init()
    if distributed.is_main():
        patches.mkl_fastpath.log_status()
    paddle.base.core.set_num_threads(math_threads(args.num_threads))
    random.seed(args.seed)
    np.random.seed(args.seed)
    paddle.seed(args.seed)
    return get_task(args.task)


def math_threads(requested: int = 0) -> int:
    """CPU math threads: ``requested`` (--num_threads) or, when it is 0, this machine's cores shared among its processes.

    Paddle runs CPU math on one thread unless told otherwise: a 2x loss on a 2-core machine.
    """
    return requested or max(1, (os.cpu_count() or 1) // distributed.local_size())


def start(args: RunArgs) -> tuple[TaskSpec, Any]:
    """What every stage does first, before touching --output_dir: validate, seed, load the tokenizer.

    Returns ``(task, tokenizer)``.
    """
    from ofa_flexbert.store.models import load_tokenizer

    require(args, "model_dir", "output_dir")
    task = setup(args)
    if distributed.is_main() and (not args.chain or args.stage == args.chain[0]):  # a chain's notes once
        for note in no_effect_notes(args):
            logger.info(note)
    check_output_dir(args)
    tokenizer = load_tokenizer(args.model_dir)
    check_lower_case(args, tokenizer)
    check_sequence_length(args)
    check_pooling(args)
    return task, tokenizer
