"""Evidence that gates route by input, not by what they can see of the route so far: pure numpy.

Three measures, reported by ``--stage gate`` at every evaluation and by ``--stage search``:

* :func:`agreement_with_previous` -- per gate, the share of inputs whose choice equals the
  previous gate's.  Gates that copy each other (each trained on features whose width gives its
  target away, then shown at inference the width the previous gate chose) score near 1.0.
* :func:`at_class` of the targets -- perfect gates ("the oracle"): every input at its target class.  Its accuracy and
  MACs bound what any gate trained on those targets can reach.
* :func:`permuted_routes` -- the random-gates ablation: the gated model's routes dealt out to
  the inputs at random.  Every route, hence the width mix of every gate and the joint mix of
  all gates, is kept exactly; only the link between an input and its route is cut.  A gated
  model that does not beat this is not routing by input.

Why no paddle here: the measures are about decisions and costs, which search, plots and tests
read without a model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def agreement_with_previous(decisions: np.ndarray) -> list[Optional[float]]:
    """Per gate g: the share of inputs with ``decisions[g] == decisions[g - 1]`` (None for gate 0).

    ``decisions`` [G, N] holds each gate's class per input, -1 where the input had left before
    that gate (early exit); such pairs are not counted, and a gate no input reached gets None.
    """
    decisions = np.asarray(decisions)
    out: list[Optional[float]] = [None]
    for g in range(1, decisions.shape[0]):
        both = (decisions[g] >= 0) & (decisions[g - 1] >= 0)
        out.append(float((decisions[g][both] == decisions[g - 1][both]).mean()) if both.any() else None)
    return out


def at_class(per_class: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """[N, ...]: row n of ``per_class[classes[n]]``.

    ``per_class`` [K, N, ...] holds one value per class and input (the uniform subnets' logits or
    MACs, the gates' features at each width); with the targets as ``classes`` this is what
    perfect gates give each input.
    """
    per_class = np.asarray(per_class)
    classes = np.asarray(classes, dtype="int64")
    return per_class[classes, np.arange(len(classes))]


def permuted_routes(decisions: np.ndarray, seed: int) -> np.ndarray:
    """``decisions`` [G, N] with its columns (one input's route) shuffled by a seeded permutation."""
    decisions = np.asarray(decisions)
    order = np.random.default_rng(seed).permutation(decisions.shape[1])
    return decisions[:, order]
