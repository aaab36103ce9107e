"""Target training of the gates (the reference's, ``--gate_training targets``): every input's target
class and the features each gate reads at its target's width, computed once on the frozen backbone,
then the gates trained on those cached vectors (see ``gate.py`` for what differs from the reference).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import paddle
from tqdm.auto import tqdm

from gate.io import save_gates, save_off_ramps
from gate.loss import gate_loss, target_features, temperature
from gate.modules import GateRouter, Gates
from gate.ramps import OffRamps, ramp_inputs, ramp_loss
from gate.settings import GateSettings, gate_macs
from gate.targets import balanced_accuracy, distribution, majority_rate, width_passes

from ofa_flexbert.train import distributed
from ofa_flexbert.engine.accounting import mean_macs, route_macs, sequence_lengths
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import EpochBatchSampler, TaskSpec
from ofa_flexbert.engine.encoder import classify, pooling_of
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.store.models import save_model
from ofa_flexbert.store.outputs import SubnetResult
from ofa_flexbert.engine.routes import Route, Subnet
from ofa_flexbert.train.evaluation import Evaluation
from ofa_flexbert.train.loop import Strategy

logger = logging.getLogger("ofa_flexbert")


@dataclass
class GateData:
    """What gate training needs from one split, computed once: per input its target class, the
    features every gate reads at that target's width [N, G, H], each static width's logits, labels;
    with off-ramps, what each reads in the full model [N, R, H] and the final logits [N, C]."""

    targets: np.ndarray
    features: np.ndarray
    logits: list[np.ndarray]
    labels: np.ndarray
    ramp_features: Optional[np.ndarray] = None
    final_logits: Optional[np.ndarray] = None


def collect(model, loader, settings: GateSettings, task: TaskSpec, tolerance: float, what: str,
            ramps: Optional[OffRamps] = None) -> GateData:
    """:class:`GateData` of every example of ``loader`` (unshuffled), the batches shared among ranks;
    the off-ramps' inputs too when ``ramps`` is given (one more, full-width forward)."""

    def one(batch: dict):
        targets, features, logits = width_passes(model, batch, settings, task, tolerance)
        chosen = np.stack([f.numpy() for f in target_features(features, targets)], axis=1)
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


class GateModules(paddle.nn.Layer):
    """What the gate stage trains and checkpoints: the gates and the off-ramps (frozen unless
    --train_off_ramps)."""

    def __init__(self, gates: Gates, ramps: OffRamps, train_ramps: bool):
        super().__init__()
        self.gates, self.ramps = gates, ramps
        for param in ramps.parameters():
            param.stop_gradient = not train_ramps

    def forward(self, features: list[paddle.Tensor], ramp_inputs: Optional[list[paddle.Tensor]] = None):
        """(gate logits per gate, off-ramp logits per off-ramp or None): one call, so that data
        parallel averages the gradients of both."""
        return self.gates(features), (None if ramp_inputs is None else self.ramps(ramp_inputs))


class GateStrategy(Strategy):
    """The gates (and off-ramps) trained on cached features; ``self.model`` is what the loop trains."""

    name = "gate"

    def __init__(self, backbone, gates: Gates, tokenizer, task: TaskSpec, args: RunArgs, weights: np.ndarray,
                 steps: int, dev: GateData, dev_loader, ramps: OffRamps):
        self.backbone, self.gates, self.tokenizer, self.task, self.args = backbone, gates, tokenizer, task, args
        self.ramps, self.train_ramps = ramps, bool(args.train_off_ramps and ramps.layers)
        self.model = self.modules()
        self.runner = distributed.data_parallel(self.model)
        self.weights, self.steps, self.dev, self.dev_loader = weights, steps, dev, dev_loader
        self.subnets = [Subnet(w, 1.0) for w in gates.settings.gate_setting]
        self.step = 0
        self.static = self._static_results()

    def modules(self) -> GateModules:
        """What this strategy trains and checkpoints."""
        return GateModules(self.gates, self.ramps, self.train_ramps)

    def resume_at(self, step: int) -> None:
        self.step = step

    def train_step(self, batch: dict) -> dict[str, float]:
        tau = temperature(self.step, self.steps)
        features = batch["features"]
        pooled = None
        if self.train_ramps:
            pooled = [batch["ramp_features"][:, r] for r in range(len(self.ramps.layers))]
        logits, ramp_logits = self.runner([features[:, g] for g in range(self.gates.settings.num_gates)], pooled)
        loss = gate_loss(logits, batch["targets"].numpy(), self.weights, tau)
        logs = {"gate_loss": float(loss), "tau": tau}
        if self.train_ramps:
            distill = ramp_loss(ramp_logits, batch["final_logits"])
            logs["ramp_loss"] = float(distill)
            loss = loss + distill
        loss.backward()
        self.step += 1
        return {"loss": float(loss), **logs}

    def _static_results(self) -> list[SubnetResult]:
        """The uniform subnets that define the targets, at full depth (constant: the backbone is frozen)."""
        config, lengths = self.backbone.bert.config, sequence_lengths(self.dev_loader)
        results = []
        for width, logits in zip(self.gates.settings.gate_setting, self.dev.logits):
            metrics = compute_metrics(self.task, logits, self.dev.labels)
            single = None if self.task.is_regression else len(np.unique(predictions(self.task, logits))) == 1
            results.append(SubnetResult(width, 1.0, metrics, mean_macs(config, width, 1.0, lengths), single))
        return results

    def routed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gated model on dev: logits [N, C], each input's MACs [N] and each gate's class [G, N]."""
        config, settings = self.backbone.bert.config, self.gates.settings
        lengths = sequence_lengths(self.dev_loader)
        pooling = pooling_of(self.backbone.bert)
        parts = []
        self.model.eval()
        with paddle.no_grad():
            for index, batch in distributed.shard_batches(self.dev_loader):
                rows = int(batch["input_ids"].shape[0])
                router = GateRouter(self.gates, config, rows)
                out = classify(self.backbone, batch["input_ids"], batch["token_type_ids"],
                               Route.uniform(config), hook=router)
                start = index * self.dev_loader.batch_sampler.batch_size
                macs = [route_macs(config, route, t) + gate_macs(settings, config.hidden_size, t, pooling)
                        for route, t in zip(out.routes, lengths[start:start + rows])]
                parts.append((index, (out.logits.numpy(), np.array(macs, dtype="float64"), router.decisions)))
        gathered = distributed.gather(parts)
        return (np.concatenate([p[0] for p in gathered]), np.concatenate([p[1] for p in gathered]),
                np.concatenate([p[2] for p in gathered], axis=1))

    def evaluate(self, task, dev_loaders) -> Evaluation:
        settings, task, dev = self.gates.settings, self.task, self.dev
        self.model.eval()
        with paddle.no_grad():
            logits = self.gates([paddle.to_tensor(dev.features[:, g]) for g in range(settings.num_gates)])
            loss = float(gate_loss(logits, dev.targets, self.weights, tau=None))
            ramps, ramp_total = self.ramp_results()
        at_target = [l.numpy().argmax(-1) for l in logits]
        gated_logits, macs, decisions = self.routed()
        metrics = compute_metrics(task, gated_logits, dev.labels)
        full = mean_macs(self.backbone.bert.config, 1.0, 1.0, sequence_lengths(self.dev_loader))
        majority = majority_rate(dev.targets, settings.num_classes)
        gates = []
        for g in range(settings.num_gates):
            chosen = decisions[g]
            gates.append({"accuracy": float((chosen == dev.targets).mean()),
                          "balanced_accuracy": balanced_accuracy(dev.targets, chosen),
                          "accuracy_at_target_width": float((at_target[g] == dev.targets).mean()),
                          "balanced_accuracy_at_target_width": balanced_accuracy(dev.targets, at_target[g]),
                          "majority_rate": majority,
                          "chance_balanced_accuracy": 1.0 / len(np.unique(dev.targets)),
                          "chosen_distribution": distribution(chosen, settings.num_classes),
                          "single_class": bool(len(np.unique(chosen)) == 1)})
        gated = {"metrics": metrics, "macs": float(macs.mean()), "macs_share": float(macs.mean() / full),
                 "single_class": None if task.is_regression else
                 bool(len(np.unique(predictions(task, gated_logits))) == 1)}
        extra = {"gate_loss": loss, "gated": gated, "gates": gates, "off_ramps": ramps,
                 "targets": {"distribution": distribution(dev.targets, settings.num_classes), "majority_rate": majority},
                 "settings": settings.to_json(), **self.training_record()}
        scalars = {"eval/gate_loss": loss, f"eval/gated/{task.primary_metric}": metrics[task.primary_metric],
                   "eval/gated/macs_share": gated["macs_share"],
                   **{f"eval/gate{g}/{key}": s[key] for g, s in enumerate(gates)
                      for key in ("accuracy", "balanced_accuracy")}}
        collapsed = [g for g, s in enumerate(gates) if s["single_class"]]
        summary = (f"gate loss {loss:.4f}; gate accuracy " + " ".join(f"{s['accuracy']:.3f}" for s in gates) +
                   f" (majority {majority:.3f}), balanced " +
                   " ".join(f"{s['balanced_accuracy']:.3f}" for s in gates) +
                   f" (chance {gates[0]['chance_balanced_accuracy']:.3f}); gated {task.primary_metric}={metrics[task.primary_metric]:.4f} "
                   f"at {gated['macs_share']:.0%} of the full model's MACs" +
                   (f"; ONE CLASS from gate(s) {', '.join(map(str, collapsed))}" if collapsed else ""))
        for ramp in ramps:
            scalars[f"eval/ramp{ramp['layer']}/{task.primary_metric}"] = ramp["metrics"][task.primary_metric]
        if self.train_ramps:
            scalars["eval/ramp_loss"] = ramp_total
            summary += f"; off-ramp loss {ramp_total:.4f}"
        selected, note = self.selection_loss(loss, gated_logits, gated, scalars, extra)
        return Evaluation(self.static, -(selected + (ramp_total if self.train_ramps else 0.0)), summary + note,
                          scalars, extra)

    def selection_loss(self, target_loss: float, gated_logits: np.ndarray, gated: dict, scalars: dict,
                       extra: dict) -> tuple[float, str]:
        """(the dev loss the checkpoint is chosen by, what to add to the log line): here the gate loss
        against the targets; the off-ramps' loss is added when they train."""
        return target_loss, ""

    def ramp_results(self) -> tuple[list[dict], float]:
        """Per off-ramp on dev: its task metrics if every input left there, its agreement with the
        final classifier; and the mean distillation loss (what --train_off_ramps lowers)."""
        dev = self.dev
        if dev.ramp_features is None:
            return [], 0.0
        final = paddle.to_tensor(dev.final_logits)
        pooled = [paddle.to_tensor(dev.ramp_features[:, r]) for r in range(len(self.ramps.layers))]
        results, ramp_logits = [], self.ramps(pooled)
        for layer, logits in zip(self.ramps.layers, ramp_logits):
            logits = logits.numpy()
            results.append({"layer": layer, "metrics": compute_metrics(self.task, logits, dev.labels),
                            "agreement_with_final": float((logits.argmax(-1) == dev.final_logits.argmax(-1)).mean())})
        return results, float(ramp_loss(ramp_logits, final))

    def save(self, output_dir: str) -> None:
        """The unchanged backbone (a complete model directory) and the gates beside it."""
        save_model(self.backbone, self.tokenizer, output_dir)
        save_gates(self.gates, output_dir, self.training_record())
        save_off_ramps(self.ramps, output_dir)

    def training_record(self) -> dict[str, Any]:
        """How the gates were trained, saved in gates.json."""
        return {"gate_training": "targets", "class_weights": [float(w) for w in self.weights]}
