"""Set-up shared by the stages: seeds, devices, data loading and the output directory.

Order matters for the bad-input contract: everything that can fail on user input
(task, files, model directory) is read before the output directory is touched, so a
failed run never overwrites what an earlier run wrote.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import paddle

import patches

from ofa_flexbert.train import checkpoint, distributed
from ofa_flexbert.config import RunArgs, no_effect_notes, task_data_dir
from ofa_flexbert.app.console import quiet_libraries
from ofa_flexbert.glue.data import TaskSpec, encode, get_task, make_loader, read_augmented, read_split
from ofa_flexbert.errors import UserError
from ofa_flexbert.store.models import save_model
from ofa_flexbert.store.outputs import SubnetResult, read_run_info, write_run_info
from ofa_flexbert.train.loop import backward_each

logger = logging.getLogger("ofa_flexbert")


class SupernetStrategy:
    """What the width and the depth/final strategies share: an OFA student trained on many subnets.

    Subclasses set ``model`` (the supernet), ``tokenizer``, ``args`` and ``subnets``.
    """

    def backward_all(self, loss_of) -> dict[str, float]:
        """``training.backward_each`` over every subnet, balanced if --balance_subnet_gradients."""
        return backward_each(self.subnets, loss_of, self.model if self.args.balance_subnet_gradients else None)

    def save(self, output_dir: str) -> None:
        """A plain BERT directory: the supernet's weights under the dense model's names."""
        from ofa_flexbert.train.supernet import plain_state_dict  # paddleslim: imported only by the stages that need it

        save_model(self.model, self.tokenizer, output_dir, state_dict=plain_state_dict(self.model))


@dataclass
class StageReport:
    """What a stage tells the CLI (and the demo table) when it finishes."""

    stage: str
    task: str
    output_dir: str
    metric: str
    results: list[SubnetResult]
    best_step: Optional[int]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    task: TaskSpec
    train_loader: Any
    dev_loaders: dict[str, Any]
    num_train_examples: int
    holdout_loader: Any = None  # a slice of train kept out of training (importance data)


def setup(args: RunArgs) -> TaskSpec:
    """Patches, device, process group and seeds: the process state a stage starts from.

    Every rank seeds alike, so models built here (e.g. a fresh classifier) are identical on
    all ranks; the training loop gives each rank its own dropout stream.
    """
    patches.apply()
    quiet_libraries(args.verbose)
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


def require(args: RunArgs, *names: str) -> None:
    """UserError naming the first of ``names`` (flags) that was not given."""
    for name in names:
        if not getattr(args, name):
            raise UserError(f"--{name} is required for --stage {args.stage}")


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


# What a finished or interrupted run leaves in its --output_dir (outputs.py has the contract).
RUN_FILES = ("model_state.pdparams", "checkpoint", "eval_results.json", "infer_results.json", "search_results.json",
             "export_results.json", "flexbert.json")


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
    import json

    try:
        with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as fh:
            positions = json.load(fh).get("max_position_embeddings")
    except (OSError, ValueError):
        return  # load_model reports unreadable model directories
    if isinstance(positions, int) and args.max_seq_length > positions:
        raise UserError(f"--max_seq_length {args.max_seq_length}: the model in {args.model_dir} has only "
                        f"{positions} positions")


def split_holdout(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, holdout): a seeded random ``fraction`` of the examples (at least one) is held out."""
    order = np.random.RandomState(seed).permutation(len(examples))
    count = min(len(examples) - 1, max(1, int(round(fraction * len(examples)))))
    held = set(order[:count].tolist())
    return ([e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)])


def load_task_data(args: RunArgs, task: TaskSpec, tokenizer, holdout_fraction: float = 0.0) -> TaskData:
    """Read, tokenise and batch the train and dev splits (training data shuffled per epoch).

    ``holdout_fraction`` > 0 keeps a seeded slice of the original training examples out of
    training (before augmentation is added) and returns it as ``holdout_loader``.
    """
    data_dir = task_data_dir(args.data_dir, task.dir_name)
    train = read_split(task, data_dir, "train")
    holdout = []
    if holdout_fraction > 0:
        train, holdout = split_holdout(train, holdout_fraction, args.seed)
    if args.data_aug:
        train = train + read_augmented(task, data_dir)
    dev = {split: read_split(task, data_dir, split) for split in task.dev_splits}
    train_loader = make_loader(encode(train, task, tokenizer, args.max_seq_length), tokenizer,
                               args.per_gpu_train_batch_size, shuffle=args.shuffle, seed=args.seed,
                               rank=distributed.rank(), world_size=distributed.world_size(),
                               group_by_length=args.group_by_length)
    dev_loaders = {split: make_loader(encode(examples, task, tokenizer, args.max_seq_length), tokenizer,
                                      args.per_gpu_eval_batch_size)
                   for split, examples in dev.items()}
    holdout_loader = None
    if holdout:
        holdout_loader = make_loader(encode(holdout, task, tokenizer, args.max_seq_length), tokenizer,
                                     args.per_gpu_eval_batch_size)
    return TaskData(task, train_loader, dev_loaders, len(train), holdout_loader)


def start(args: RunArgs) -> tuple[TaskSpec, Any]:
    """What every stage does first, before touching --output_dir: validate, seed, load the tokenizer.

    Returns ``(task, tokenizer)``.
    """
    from ofa_flexbert.store.models import load_tokenizer

    require(args, "model_dir", "output_dir")
    task = setup(args)
    if distributed.is_main():
        for note in no_effect_notes(args):
            logger.info(note)
    check_output_dir(args)
    tokenizer = load_tokenizer(args.model_dir)
    check_lower_case(args, tokenizer)
    check_sequence_length(args)
    check_pooling(args)
    return task, tokenizer


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


def finish(args: RunArgs, task: TaskSpec, data: TaskData, result, extra: Optional[dict[str, Any]] = None) -> StageReport:
    """What every stage does last: record flexbert.json (rank 0), wait for every rank, report to the CLI."""
    info = {"complete": True, "best_step": result.best_step, "train_examples": data.num_train_examples,
            "steps": result.steps, "seconds": round(result.seconds, 1), "world_size": distributed.world_size(),
            "global_train_batch_size": args.per_gpu_train_batch_size * distributed.world_size(), **(extra or {})}
    if distributed.is_main():
        write_run_info(args, task.name, info)
    distributed.barrier()  # a following stage (--stage all) reads what rank 0 wrote
    return StageReport(args.stage, task.name, args.output_dir, task.primary_metric, result.best_results,
                       result.best_step, result.seconds, extra or {})
