"""The gate loss (flexible-bert-method.md §5.4), its class weights and temperature schedule.

The reference's loss, per width pass k: ``λ_k / (G·B) · Σ_{g,b} −log max(p_g[b, t_b], 1e−6) ·
[t_b = k]`` with ``p_g`` a Gumbel-softmax of gate g's logits on the features of width k.
Since a row only counts in the pass of its own target's width, each gate is evaluated once
per row, on the features of that width (:func:`target_features`): the same value at a
K-th of the cost.

Class weights: the reference hard-codes a table per task with no recipe.  Here they come
from the training targets with scikit-learn's ``balanced`` rule, n / (K · n_k), over the
classes that occur (a class no training input has gets weight 0: it contributes nothing
either way).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

TAU_START, TAU_MIN, TAU_PERIOD, TAU_FINAL_FACTOR = 1.0, 0.5, 500, 0.3
PROB_FLOOR = 1e-6


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
    max(0.5, exp(−r·step)) with r = −ln(0.3) / total_steps (§5.4)."""
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
