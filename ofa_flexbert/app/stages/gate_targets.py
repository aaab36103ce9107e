"""Target training of the gates (the reference's, ``--gate_training targets``): the gates trained on the
vectors ``gate_data`` caches (see ``gate.py`` for what differs from the reference); each evaluation
also reports the evidence of ``gate_evidence`` (copying, random routes, perfect gates).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import paddle

from gate.io import save_gates, save_off_ramps
from gate.loss import gate_loss, temperature, training_rows
from gate.modules import Gates
from gate.ramps import OffRamps, ramp_loss
from gate.targets import distribution

from ofa_flexbert.config import RunArgs
from ofa_flexbert.engine.accounting import mean_macs, sequence_lengths
from ofa_flexbert.glue.data import TaskSpec
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.store.models import save_model
from ofa_flexbert.store.outputs import SubnetResult
from ofa_flexbert.train import distributed
from ofa_flexbert.train.evaluation import Evaluation
from ofa_flexbert.train.loop import Strategy

from .gate_data import GateData
from .gate_evidence import GatedOnDev, evaluation_line, gate_rows

logger = logging.getLogger("ofa_flexbert")


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


def per_gate(rows: np.ndarray) -> list[paddle.Tensor]:
    """[M, G, H] -> what each gate reads, G tensors [M, H]."""
    return [paddle.to_tensor(rows[:, g]) for g in range(rows.shape[1])]


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
        self.features = args.gate_features
        self.lengths = sequence_lengths(dev_loader)
        self.on_dev = GatedOnDev(backbone, gates, task, dev, dev_loader, self.lengths, args.gate_target)
        self.step = 0
        self.static = self._static_results()

    def modules(self) -> GateModules:
        """What this strategy trains and checkpoints."""
        return GateModules(self.gates, self.ramps, self.train_ramps)

    def resume_at(self, step: int) -> None:
        self.step = step

    def train_step(self, batch: dict) -> dict[str, float]:
        tau = temperature(self.step, self.steps)
        rows, targets = training_rows(batch["features"].numpy(), batch["targets"].numpy(), self.features)
        pooled = None
        if self.train_ramps:
            pooled = [batch["ramp_features"][:, r] for r in range(len(self.ramps.layers))]
        logits, ramp_logits = self.runner(per_gate(rows), pooled)
        loss = gate_loss(logits, targets, self.weights, tau)
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
        config = self.backbone.bert.config
        results = []
        for width, logits in zip(self.gates.settings.gate_setting, self.dev.logits):
            metrics = compute_metrics(self.task, logits, self.dev.labels)
            single = None if self.task.is_regression else len(np.unique(predictions(self.task, logits))) == 1
            results.append(SubnetResult(width, 1.0, metrics, mean_macs(config, width, 1.0, self.lengths), single))
        return results

    def evaluate(self, task, dev_loaders) -> Evaluation:
        settings, task, dev = self.gates.settings, self.task, self.dev
        metric = task.primary_metric
        self.model.eval()
        with paddle.no_grad():
            rows, targets = training_rows(dev.features, dev.targets, self.features)
            loss = float(gate_loss(self.gates(per_gate(rows)), targets, self.weights, tau=None))
            at_target = [l.numpy().argmax(-1) for l in self.gates(per_gate(dev.at_targets()))]
            ramps, ramp_total = self.ramp_results()
        gated_logits, macs, decisions = self.on_dev.routed()
        full = mean_macs(self.backbone.bert.config, 1.0, 1.0, self.lengths)
        gated = self.on_dev.routed_row(gated_logits, macs, full)
        random, oracle = self.on_dev.random_routes(decisions, full), self.on_dev.oracle(full)
        gates = gate_rows(dev.targets, decisions, at_target, settings.num_classes)
        extra = {"gate_loss": loss, "gated": gated, "random_routes": random, "oracle": oracle, "gates": gates,
                 "off_ramps": ramps, "settings": settings.to_json(), **self.training_record(),
                 "targets": {"distribution": distribution(dev.targets, settings.num_classes),
                             "majority_rate": gates[0]["majority_rate"]}}
        scalars = {"eval/gate_loss": loss, f"eval/gated/{metric}": gated["metrics"][metric],
                   "eval/gated/macs_share": gated["macs_share"], f"eval/random_routes/{metric}": random["metrics"][metric],
                   **{f"eval/gate{g}/{key}": s[key] for g, s in enumerate(gates)
                      for key in ("accuracy", "balanced_accuracy", "agreement_with_previous") if s[key] is not None}}
        for ramp in ramps:
            scalars[f"eval/ramp{ramp['layer']}/{metric}"] = ramp["metrics"][metric]
        summary = evaluation_line(task, loss, gates, gated, random, oracle)
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
        return {"gate_training": "targets", "gate_target": self.args.gate_target, "gate_features": self.features,
                "class_weights": [float(w) for w in self.weights]}
