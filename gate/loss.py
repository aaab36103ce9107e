"""The gate loss (docs/reference.md, Gate loss), its class weights and temperature schedule.

The reference's loss, per width pass k: ``λ_k / (G·B) · Σ_{g,b} −log max(p_g[b, t_b], 1e−6) ·
[t_b = k]`` with ``p_g`` a Gumbel-softmax of gate g's logits on the features of width k.
Since a row only counts in the pass of its own target's width, each gate is evaluated once
per row, on the features of that width (:func:`target_features`): the same value at a
K-th of the cost.

Class weights: the reference hard-codes a table per task with no recipe.  Here they come
from the training targets with scikit-learn's ``balanced`` rule, n / (K · n_k), over the
classes that occur (a class no training input has gets weight 0: it contributes nothing
either way).

Route training (``--gate_training routes``, :func:`route_loss`): the gates' straight-through
choices run the model (``gate.relaxed``), whose logits are distilled from the full model's,
plus a hinge on the batch's MACs share above a target: ``KD + λ · max(0, share − target)``.
The share is the one ``eval_results.json`` reports (gates' own MACs included), so the target
is read the way a user reads the result.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, TYPE_CHECKING

import numpy as np
import paddle
import paddle.nn.functional as F

TAU_START, TAU_MIN, TAU_PERIOD, TAU_FINAL_FACTOR = 1.0, 0.5, 500, 0.3
PROB_FLOOR = 1e-6

if TYPE_CHECKING:
    from ofa_flexbert.glue.tasks import TaskSpec

    from .settings import RouteCosts


def class_weights(targets: np.ndarray, classes: int) -> np.ndarray:
    """scikit-learn's balanced weights n / (K · n_k) for the classes present; 0 for absent ones."""
    from sklearn.utils.class_weight import compute_class_weight

    targets = np.asarray(targets, dtype="int64")
    present = np.unique(targets)
    weights = np.zeros(classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=targets)
    return weights


def temperature(step: int, total_steps: int) -> float:
    """The reference's Gumbel temperature: 1 until step 500, then every 500 steps
    max(0.5, exp(−r·step)) with r = −ln(0.3) / total_steps (docs/reference.md, Gate loss)."""
    if step < TAU_PERIOD:
        return TAU_START
    rate = -math.log(TAU_FINAL_FACTOR) / max(1, total_steps)
    return max(TAU_MIN, math.exp(-rate * (step // TAU_PERIOD) * TAU_PERIOD))


def target_features(features: Sequence[Sequence[paddle.Tensor]], targets: np.ndarray) -> list[paddle.Tensor]:
    """Per gate g, [B, H]: row b's features at the width its target names (``features[t_b][g][b]``)."""
    targets = np.asarray(targets, dtype="int64")
    gates = len(features[0])
    out = []
    for g in range(gates):
        stacked = paddle.stack([features[k][g] for k in range(len(features))], axis=0)  # [K, B, H]
        index = paddle.to_tensor(np.stack([targets, np.arange(len(targets))], axis=1))
        out.append(paddle.gather_nd(stacked, index))
    return out


def gate_loss(logits: Sequence[paddle.Tensor], targets: np.ndarray, weights: np.ndarray,
              tau: Optional[float]) -> paddle.Tensor:
    """The weighted gate loss over all gates; ``tau`` None: no Gumbel noise (model selection).

    ``logits[g]`` [B, K] are gate g's on the features of each row's target width.
    """
    targets_t = paddle.to_tensor(np.asarray(targets, dtype="int64"))
    row_weights = paddle.to_tensor(np.asarray(weights, dtype="float32")[np.asarray(targets, dtype="int64")])
    total = 0.0
    for gate_logits in logits:
        probs = F.softmax(gate_logits, axis=-1) if tau is None else F.gumbel_softmax(gate_logits, temperature=tau)
        picked = paddle.take_along_axis(probs, targets_t.unsqueeze(-1), axis=-1).squeeze(-1)
        nll = -paddle.log(paddle.clip(picked, min=PROB_FLOOR))
        total = total + (nll * row_weights).sum()
    return total / (len(logits) * len(targets))


def macs_share(choices: Sequence[paddle.Tensor], costs: Sequence["RouteCosts"]) -> paddle.Tensor:
    """The batch's MACs as a share of the full model's (ratio of sums, as ``eval_results.json``'s
    ``macs_share`` is a ratio of means) when gate g's choice for row b is ``choices[g][b]`` [B, K]
    (one-hot, or straight-through: then the share has the soft choices' gradient); ``costs[b]`` is
    row b's :class:`gate.settings.RouteCosts`."""
    block = paddle.to_tensor(np.array([c.block for c in costs], dtype="float32"))  # [B, K]
    fixed = float(sum(c.fixed for c in costs))
    full = float(sum(c.full for c in costs))
    chosen = paddle.add_n([(choice * block).sum() for choice in choices])
    return (chosen + fixed) / full


def route_loss(task: "TaskSpec", logits: paddle.Tensor, teacher: paddle.Tensor, share: paddle.Tensor,
               target: float, weight: float) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """(loss, distillation, penalty): the routed model's logits distilled from the full model's
    (soft cross-entropy; MSE for regression) plus ``weight`` times the share above ``target``."""
    from ofa_flexbert.engine.losses import logit_distillation

    distill = logit_distillation(task, logits, teacher)
    penalty = F.relu(share - target)
    return distill + weight * penalty, distill, penalty
