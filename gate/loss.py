"""The gate loss (docs/reference.md, Gate loss), its class weights and temperature schedule.

The reference's loss, per width pass k: ``λ_k / (G·B) · Σ_{g,b} −log max(p_g[b, t_b], 1e−6) ·
[t_b = k]`` with ``p_g`` a Gumbel-softmax of gate g's logits on the features of width k.
Since a row only counts in the pass of its own target's width, each gate is evaluated once
per row, on the features of that width (:func:`training_rows` with ``target``): the same value
at a K-th of the cost.  The default here (``all_widths``) evaluates it on every width's features
instead, each with the row's target, so the width carries no information about the target.

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


def training_rows(features: np.ndarray, targets: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [M, G, H], targets [M]): the rows each gate's loss reads, from ``features`` [B, K, G, H]
    (what gate g reads at each --gate_setting width) and ``targets`` [B].

    ``which`` (--gate_features): ``target`` -- the reference's, row b at its target's width only
    (M = B); ``all_widths`` -- row b at every width, each copy with b's target (M = B·K, copy k of
    row b at b·K + k).  Why all widths: under ``target`` the width that produced a vector names the
    target, so a gate can score by recognising the width; at inference it then sees the width the
    previous gate chose and copies that choice (docs/decisions.md, "Gates that copy each other").
    """
    features, targets = np.asarray(features), np.asarray(targets, dtype="int64")
    if which == "target":
        return features[np.arange(len(targets)), targets], targets
    if which == "all_widths":
        batch, classes = features.shape[:2]
        return features.reshape((batch * classes,) + features.shape[2:]), np.repeat(targets, classes)
    raise ValueError(f"--gate_features: expected all_widths or target, got '{which}'")


def gate_loss(logits: Sequence[paddle.Tensor], targets: np.ndarray, weights: np.ndarray,
              tau: Optional[float]) -> paddle.Tensor:
    """The weighted gate loss over all gates; ``tau`` None: no Gumbel noise (model selection).

    ``logits[g]`` [M, K] are gate g's on the rows of :func:`training_rows`; ``targets`` [M] theirs.
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
