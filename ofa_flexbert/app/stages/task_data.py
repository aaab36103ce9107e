"""A stage's data: the task's train and dev splits read, tokenised and batched (and the importance holdout)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ofa_flexbert.config import RunArgs, task_data_dir
from ofa_flexbert.glue.data import encode, make_loader, read_augmented, read_split
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.train import distributed


@dataclass
class TaskData:
    task: TaskSpec
    train_loader: Any
    dev_loaders: dict[str, Any]
    num_train_examples: int
    holdout_loader: Any = None  # a slice of train kept out of training (importance data)


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
