"""What target training of the gates (``--gate_training targets``) computes once on the frozen backbone:
every input's target class and the features each gate reads at every --gate_setting width
(:class:`GateData`, :func:`collect`), and the loader of those cached vectors the gates train on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import paddle
from tqdm.auto import tqdm

from gate.loss import training_rows
from gate.ramps import OffRamps, ramp_inputs
from gate.settings import GateSettings
from gate.targets import width_passes

from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import EpochBatchSampler, TaskSpec
from ofa_flexbert.train import distributed


@dataclass
class GateData:
    """What gate training needs from one split, computed once: per input its target class, the
    features every gate reads at every --gate_setting width [N, K, G, H], each static width's logits,
    labels; with off-ramps, what each reads in the full model [N, R, H] and the final logits [N, C]."""

    targets: np.ndarray
    features: np.ndarray
    logits: list[np.ndarray]
    labels: np.ndarray
    ramp_features: Optional[np.ndarray] = None
    final_logits: Optional[np.ndarray] = None


    def at_targets(self) -> np.ndarray:
        """[N, G, H]: what each gate reads at its input's target width."""
        return training_rows(self.features, self.targets, "target")[0]


def collect(model, loader, settings: GateSettings, task: TaskSpec, tolerance: float, rule: str, what: str,
            ramps: Optional[OffRamps] = None) -> GateData:
    """:class:`GateData` of every example of ``loader`` (unshuffled), targets by ``rule`` (--gate_target),
    the batches shared among ranks; the off-ramps' inputs too when ``ramps`` is given (one more,
    full-width forward)."""

    def one(batch: dict):
        targets, features, logits = width_passes(model, batch, settings, task, tolerance, rule)
        chosen = np.stack([np.stack([f.numpy() for f in per_gate], axis=1) for per_gate in features], axis=1)
        ramp = (None, None)
        if ramps is not None and ramps.layers:
            pooled, final = ramp_inputs(model, batch, ramps)
            ramp = (np.stack([p.numpy() for p in pooled], axis=1), final.numpy())
        return targets, chosen, logits, batch["labels"].numpy(), *ramp

    batches = list(distributed.shard_batches(loader))
    bar = tqdm(batches, desc=f"gate targets ({what})", unit="batch", leave=False,
               disable=not distributed.is_main(), mininterval=1.0)
    parts = distributed.gather([(index, one(batch)) for index, batch in bar])
    with_ramps = parts[0][4] is not None
    return GateData(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    [np.concatenate([p[2][k] for p in parts]) for k in range(settings.num_classes)],
                    np.concatenate([p[3] for p in parts]),
                    np.concatenate([p[4] for p in parts]) if with_ramps else None,
                    np.concatenate([p[5] for p in parts]) if with_ramps else None)


class FeatureSet(paddle.io.Dataset):
    def __init__(self, data: GateData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.targets)

    def __getitem__(self, index: int):
        data = self.data
        if data.ramp_features is None:
            return data.features[index], data.targets[index]
        return data.features[index], data.targets[index], data.ramp_features[index], data.final_logits[index]


def _stack(rows) -> dict[str, paddle.Tensor]:
    """A batch: ``features`` [B, K, G, H], ``targets`` [B] and, with off-ramps, their inputs."""
    batch = {"features": paddle.to_tensor(np.stack([r[0] for r in rows]).astype("float32")),
             "targets": paddle.to_tensor(np.array([r[1] for r in rows], dtype="int64"))}
    if len(rows[0]) > 2:
        batch["ramp_features"] = paddle.to_tensor(np.stack([r[2] for r in rows]).astype("float32"))
        batch["final_logits"] = paddle.to_tensor(np.stack([r[3] for r in rows]).astype("float32"))
    return batch


def feature_loader(data: GateData, args: RunArgs) -> paddle.io.DataLoader:
    """Batches of cached gate features, shuffled per epoch and sharded like the token loaders."""
    sampler = EpochBatchSampler(len(data.targets), args.per_gpu_train_batch_size, shuffle=args.shuffle,
                                seed=args.seed, rank=distributed.rank(), world_size=distributed.world_size())
    return paddle.io.DataLoader(FeatureSet(data), batch_sampler=sampler, collate_fn=_stack, num_workers=0)
