"""Neural grafting (Flexible-BERT's addition to DynaBERT's width stage).

Every graft period, importance is recomputed at full width and, in every layer independently,
the least important ``fraction`` of heads and FFN neurons each receive a share ``alpha`` of a
donor from the most important ones, paired by rank (the r-th least important receives from
the r-th most important):  receiver <- (1 - alpha) * receiver + alpha * donor.

What a head or neuron is, in Paddle's [in, out] Linear layout:
* head h: columns h*d..(h+1)*d of the q/k/v weights and those bias entries, and the same rows of
  the attention-output weight (its bias belongs to no head and is left alone);
* FFN neuron n: column n of the FFN-in weight and bias entry n, and row n of the FFN-out weight.
Nothing else changes: no embeddings, norms, pooler or classifier, and no re-sorting afterwards.
The donors are read from a snapshot, so a unit that is both donor and receiver donates its
pre-graft value.  Sizes come from the model, never from BERT-base constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle

from .supernet import linear


@dataclass(frozen=True)
class GraftSchedule:
    """When grafts happen: after optimizer steps period, 2*period, ... up to ``stop`` (inclusive)."""

    period: int
    stop: int

    def due(self, step: int) -> bool:
        return self.period > 0 and step > 0 and step % self.period == 0 and step <= self.stop

    def count(self, step: int) -> int:
        """Grafts done by the end of ``step`` (also right after a resume)."""
        return min(step, self.stop) // self.period if self.period > 0 else 0


def default_schedule(num_examples: int, batch_size: int, total_steps: int, period: int = 0,
                     stop: int = -1) -> GraftSchedule:
    """The reference's schedule unless overridden (docs/reference.md, Grafting schedule).

    period = int(N / batch / 3) (a third of an epoch, at least 1); stop = the step where the
    last epoch's worth of steps begins, int(total_steps - N / batch) -- for E epochs within a step
    of the reference's int(N / batch * (E - 1)), and it also holds for runs sized by --max_steps.
    """
    per_epoch = num_examples / batch_size
    period = period if period > 0 else max(1, int(per_epoch / 3))
    stop = stop if stop >= 0 else max(0, int(total_steps - per_epoch))
    return GraftSchedule(period, stop)


def pairs(importance: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(receivers, donors): the ``fraction`` least important, least first, and the most important, most first."""
    count = int(fraction * len(importance))  # floor: with fraction <= 0.5 the two sets are disjoint
    order = np.argsort(importance, kind="stable")
    return order[:count], order[::-1][:count]


def _blend(param: paddle.Tensor, axis: int, receivers: np.ndarray, donors: np.ndarray, alpha: float) -> None:
    """param[receivers] <- (1 - alpha) * param[receivers] + alpha * param[donors], along ``axis``."""
    value = param.numpy()
    old = value.copy()
    index = [slice(None)] * value.ndim
    index[axis] = receivers
    donor_index = list(index)
    donor_index[axis] = donors
    value[tuple(index)] = (1.0 - alpha) * old[tuple(index)] + alpha * old[tuple(donor_index)]
    param.set_value(value)


def _head_units(heads: np.ndarray, head_dim: int) -> np.ndarray:
    """Head indices -> the flat feature indices of those heads, dimension by dimension."""
    return (heads[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1)


def graft(model, head_importance: np.ndarray, neuron_importance: np.ndarray, alpha: float,
          fraction: float) -> dict[str, int]:
    """Graft every encoder layer of ``model`` in place; returns how many units received material."""
    counts = {"heads": 0, "neurons": 0}
    with paddle.no_grad():
        for index, layer in enumerate(model.bert.encoder.layers):
            attention = layer.self_attn
            receivers, donors = pairs(head_importance[index], fraction)
            rows_to, rows_from = _head_units(receivers, attention.head_dim), _head_units(donors, attention.head_dim)
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                _blend(linear(proj).weight, 1, rows_to, rows_from, alpha)
                _blend(linear(proj).bias, 0, rows_to, rows_from, alpha)
            _blend(linear(attention.out_proj).weight, 0, rows_to, rows_from, alpha)
            receivers_n, donors_n = pairs(neuron_importance[index], fraction)
            _blend(linear(layer.linear1).weight, 1, receivers_n, donors_n, alpha)
            _blend(linear(layer.linear1).bias, 0, receivers_n, donors_n, alpha)
            _blend(linear(layer.linear2).weight, 0, receivers_n, donors_n, alpha)
            counts["heads"] += len(receivers)
            counts["neurons"] += len(receivers_n)
    return counts
