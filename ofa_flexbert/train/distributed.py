"""Data parallel training under ``python -m paddle.distributed.launch`` (GPUs, or CPU processes with gloo).

One process per device; every process holds the whole model.  What this module guarantees,
and where (docs/reference.md, Data parallel for why the stock OFA recipe fails):

* the student's training forward goes through ``paddle.DataParallel`` (:func:`data_parallel`),
  which averages gradients over ranks during backward.  OFA's distillation hooks stay on the
  unwrapped model (so layer names keep their usual form and the teacher needs no wrapper);
* anything computed outside the synchronised backward that changes weights -- importance for
  rewiring and grafting -- is summed over the ranks' shares of its data and the sum is formed
  in rank order on every rank (:func:`sum_over_ranks`), so every rank applies the same
  permutation and the same grafts, having run 1/N of the importance batches;
* the training data is sharded by the sampler (``data.EpochBatchSampler``): a global batch is
  ``per_gpu_train_batch_size x world_size`` examples and rank r takes the r-th slice, so the
  schedule counts global steps;
* only rank 0 writes (model, results, checkpoints, VisualDL, flexbert.json);
* evaluation is sharded: each rank runs every N-th dev batch (:func:`shard`) and the logits are
  gathered back into file order on every rank (:func:`gather`), so every rank computes the same
  metrics as a single process while running 1/N of the dev forwards.

With a single process every function here is a no-op, so the stages call them unconditionally.
"""
from __future__ import annotations

import itertools
import os
import sys
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np
import paddle

_initialised = False
T = TypeVar("T")


def world_size() -> int:
    """Number of training processes (1 unless started by paddle.distributed.launch)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank() -> int:
    """This process's global rank (0 when not launched)."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main() -> bool:
    """Whether this process writes outputs and logs."""
    return rank() == 0


def local_size() -> int:
    """Processes on this machine (they share its CPU cores)."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE", str(world_size())))


def init() -> None:
    """Join the process group once per process (no-op without a launcher)."""
    global _initialised
    if world_size() > 1 and not _initialised:
        paddle.distributed.init_parallel_env()
        _initialised = True


def data_parallel(model: paddle.nn.Layer, find_unused_parameters: bool = False) -> paddle.nn.Layer:
    """The layer to run training forwards through: ``paddle.DataParallel(model)``, or ``model`` alone.

    ``find_unused_parameters`` is needed when a forward may skip parameters (elastic depth
    skips whole layers); it costs a graph walk per forward, so the width stage leaves it off.
    Creating the wrapper also broadcasts rank 0's weights, so the ranks start identical.
    """
    if world_size() == 1:
        return model
    init()
    return paddle.DataParallel(model, find_unused_parameters=find_unused_parameters)


def sum_over_ranks(*arrays: np.ndarray) -> list[np.ndarray]:
    """The sum over ranks of each of ``arrays``, bit-identical on every rank.

    Every rank receives all ranks' arrays and adds them in rank order itself, rather than
    trusting a collective reduction to round alike everywhere: a permutation computed from the
    sum (rewiring, grafting) must be the same on every rank, near-ties included.
    """
    if world_size() == 1:
        return list(arrays)
    init()
    gathered: list[tuple[int, tuple[np.ndarray, ...]]] = []
    paddle.distributed.all_gather_object(gathered, (rank(), tuple(arrays)))
    parts = [part for _, part in sorted(gathered, key=lambda item: item[0])]
    totals = [np.array(array, copy=True) for array in parts[0]]
    for part in parts[1:]:
        for total, array in zip(totals, part):
            total += array
    return totals


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (every rank must pass the same keys).

    A rank's loss is the mean over its slice of the global batch; with equal slices the
    average over ranks is the loss of the whole global batch, the figure a single process
    with that batch size would log.
    """
    if world_size() == 1 or not values:
        return values
    init()
    keys = sorted(values)
    tensor = paddle.to_tensor(np.array([values[k] for k in keys], dtype="float64"))
    paddle.distributed.all_reduce(tensor)
    return dict(zip(keys, (tensor.numpy() / world_size()).tolist()))


def shard(items: Iterable[T]) -> Iterator[tuple[int, T]]:
    """``(index, item)`` for this rank's share of ``items``: every world_size-th, from its rank on.

    Evaluation deals dev batches round-robin, so each example is evaluated by exactly one rank
    (no duplicates, unlike the training sampler's top-up) and :func:`gather` restores the order.
    """
    return itertools.islice(enumerate(items), rank(), None, world_size())


def shard_batches(loader) -> Iterator[tuple[int, dict]]:
    """``(index, batch)`` for this rank's share (:func:`shard`) of a ``data.make_loader``'s batches.

    Only this rank's batches are collated: the indices come from the loader's batch sampler.
    """
    for index, indices in shard(loader.batch_sampler):
        yield index, loader.collate_fn([loader.dataset[j] for j in indices])


def gather(parts: list[tuple[int, Any]]) -> list[Any]:
    """Every rank's ``(index, value)`` pairs, on every rank, as the values in index order."""
    if world_size() > 1:
        init()
        gathered: list[list[tuple[int, Any]]] = []
        paddle.distributed.all_gather_object(gathered, parts)
        parts = [pair for rank_parts in gathered for pair in rank_parts]
    return [value for _, value in sorted(parts, key=lambda pair: pair[0])]


def barrier() -> None:
    """Wait for every rank (e.g. before a later stage reads what rank 0 just wrote)."""
    if world_size() > 1:
        init()
        paddle.distributed.barrier()


def exit_process(code: int) -> None:
    """End the process with ``code``; under the launcher, all ranks together and without teardown.

    Paddle 2.6.2's gloo context can abort (SIGABRT) while being destroyed at interpreter exit
    when the other rank has already gone, turning a finished run into a failed one (seen in
    CI, intermittently).  So ranks meet at a barrier, flush their output and leave with
    ``os._exit``: every file was already written atomically and synced.
    """
    if world_size() > 1 and _initialised:
        if code == 0:
            barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
