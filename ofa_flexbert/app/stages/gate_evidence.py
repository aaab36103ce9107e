"""The gated model on dev and what it is judged against (``gate.diagnostics``): its routes dealt out at
random (same width mix, no link to the input), perfect gates (each input at its target width), and
per gate how its choices compare with the targets and with the previous gate's.

Why apart from training: every evaluation of either gate training (``targets``, ``routes``) reports
the same evidence, and none of it depends on how the gates were trained.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import paddle

from gate.diagnostics import agreement_with_previous, at_class, permuted_routes
from gate.modules import GateRouter, Gates
from gate.settings import gate_macs
from gate.targets import balanced_accuracy, distribution, majority_rate

from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.encoder import classify, pooling_of
from ofa_flexbert.engine.routes import Route
from ofa_flexbert.glue.data import TaskSpec
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.train import distributed

from .gate_data import GateData

RANDOM_ROUTE_SEEDS = (0, 1, 2)  # the random-gates ablation: three deals of the gated model's routes


class GatedOnDev:
    """The gates routing the frozen backbone over dev, and the rows they are judged against.

    ``dev`` holds the targets (by ``target_rule``, --gate_target) and each static width's logits;
    ``lengths`` every dev input's length in tokens, for its MACs.
    """

    def __init__(self, backbone, gates: Gates, task: TaskSpec, dev: GateData, dev_loader, lengths: list[int],
                 target_rule: str):
        self.backbone, self.gates, self.task, self.dev, self.dev_loader = backbone, gates, task, dev, dev_loader
        self.lengths, self.target_rule = lengths, target_rule

    def routed(self, replay: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gated model on dev: logits [N, C], each input's MACs [N] and each gate's class [G, N].

        ``replay`` [G, N]: the gates do not run, input n takes class ``replay[g, n]`` at gate g
        (the random-gates ablation); its MACs still count the gates, so that only the routes differ.
        """
        config, settings = self.backbone.bert.config, self.gates.settings
        pooling = pooling_of(self.backbone.bert)
        size = self.dev_loader.batch_sampler.batch_size
        parts = []
        self.gates.eval()
        with paddle.no_grad():
            for index, batch in distributed.shard_batches(self.dev_loader):
                rows, start = int(batch["input_ids"].shape[0]), index * size
                router = GateRouter(self.gates, config, rows,
                                    replay=None if replay is None else replay[:, start:start + rows])
                out = classify(self.backbone, batch["input_ids"], batch["token_type_ids"],
                               Route.uniform(config), hook=router)
                macs = [route_macs(config, route, t) + gate_macs(settings, config.hidden_size, t, pooling)
                        for route, t in zip(out.routes, self.lengths[start:start + rows])]
                parts.append((index, (out.logits.numpy(), np.array(macs, dtype="float64"), router.decisions)))
        gathered = distributed.gather(parts)
        return (np.concatenate([p[0] for p in gathered]), np.concatenate([p[1] for p in gathered]),
                np.concatenate([p[2] for p in gathered], axis=1))

    def routed_row(self, logits: np.ndarray, macs: np.ndarray, full: float) -> dict[str, Any]:
        """A routed model's row in eval_results.json: metrics, mean MACs, their share, one class or not."""
        task = self.task
        return {"metrics": compute_metrics(task, logits, self.dev.labels), "macs": float(macs.mean()),
                "macs_share": float(macs.mean() / full),
                "single_class": None if task.is_regression else bool(len(np.unique(predictions(task, logits))) == 1)}

    def oracle(self, full: float) -> dict[str, Any]:
        """Perfect gates: each dev input at its target width (every block), deciding for free -- the
        ceiling of gates trained on these targets."""
        config = self.backbone.bert.config
        macs = np.array([[route_macs(config, Route.uniform(config, w), t) for t in self.lengths]
                         for w in self.gates.settings.gate_setting], dtype="float64")  # [K, N]
        row = self.routed_row(at_class(np.stack(self.dev.logits), self.dev.targets),
                              at_class(macs, self.dev.targets), full)
        return {**row, "gate_target": self.target_rule}

    def random_routes(self, decisions: np.ndarray, full: float) -> dict[str, Any]:
        """The random-gates ablation: the gated model's routes dealt out at random, once per seed
        of :data:`RANDOM_ROUTE_SEEDS`; the mean metrics and the primary metric of each deal."""
        metric = self.task.primary_metric
        deals = []
        for seed in RANDOM_ROUTE_SEEDS:
            logits, macs, _ = self.routed(permuted_routes(decisions, seed))
            deals.append(self.routed_row(logits, macs, full))
        metrics = {k: float(np.mean([d["metrics"][k] for d in deals])) for k in deals[0]["metrics"]}
        return {"metrics": metrics, "macs": float(np.mean([d["macs"] for d in deals])),
                "macs_share": float(np.mean([d["macs_share"] for d in deals])), "seeds": list(RANDOM_ROUTE_SEEDS),
                "per_seed": [d["metrics"][metric] for d in deals]}


def gate_rows(targets: np.ndarray, decisions: np.ndarray, at_target: list[np.ndarray], classes: int) -> list[dict]:
    """Per gate on dev: how its choices on the routes taken (``decisions`` [G, N]) and at each input's
    target width (``at_target``) compare with the targets, and how often it copies the previous gate."""
    majority = majority_rate(targets, classes)
    agreement = agreement_with_previous(decisions)
    rows = []
    for g, chosen in enumerate(decisions):
        rows.append({"accuracy": float((chosen == targets).mean()),
                     "balanced_accuracy": balanced_accuracy(targets, chosen),
                     "accuracy_at_target_width": float((at_target[g] == targets).mean()),
                     "balanced_accuracy_at_target_width": balanced_accuracy(targets, at_target[g]),
                     "agreement_with_previous": agreement[g],
                     "majority_rate": majority, "chance_balanced_accuracy": 1.0 / len(np.unique(targets)),
                     "chosen_distribution": distribution(chosen, classes),
                     "single_class": bool(len(np.unique(chosen)) == 1)})
    return rows


def evaluation_line(task: TaskSpec, loss: float, gates: list[dict], gated: dict, random: dict, oracle: dict) -> str:
    """The console line of one gate evaluation: the gates against their targets, how often each copies
    the previous one, and the gated model beside random routes of its width mix and perfect gates."""
    metric = task.primary_metric
    collapsed = [g for g, s in enumerate(gates) if s["single_class"]]
    copies = " ".join("-" if s["agreement_with_previous"] is None else f"{s['agreement_with_previous']:.2f}"
                      for s in gates)
    line = (f"gate loss {loss:.4f}; gate accuracy on routes " + " ".join(f"{s['accuracy']:.3f}" for s in gates)
            + ", at target width " + " ".join(f"{s['accuracy_at_target_width']:.3f}" for s in gates)
            + f" (majority {gates[0]['majority_rate']:.3f}); same choice as the previous gate {copies}; "
            f"gated {metric}={gated['metrics'][metric]:.4f} at {gated['macs_share']:.0%} of the full model's MACs, "
            f"random routes {random['metrics'][metric]:.4f}, perfect gates {oracle['metrics'][metric]:.4f} "
            f"at {oracle['macs_share']:.0%}")
    if collapsed:
        line += f"; ONE CLASS from gate(s) {', '.join(map(str, collapsed))}"
    if not gated["metrics"][metric] > random["metrics"][metric]:
        line += "; NOT ROUTING BY INPUT: no better than its routes dealt out at random"
    return line
