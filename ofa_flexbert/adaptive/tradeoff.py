"""The accuracy-cost search's pure rules: what is searched, where each input leaves, what is kept.

Why a module of its own, importing no framework: ``--stage search`` evaluates thousands of
settings from a few recorded passes, and each rule here is arithmetic that must be exact and
testable on its own -- which class -> width maps exist (:func:`width_maps`), where an input
leaves at a threshold (:func:`exit_steps`), how dev is halved (:func:`split_halves`), which
settings are worth keeping (:func:`pareto_front`, :func:`best_under_budget`).
"""
from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np


def width_maps(candidates: Sequence[float], classes: int) -> list[tuple[float, ...]]:
    """Every non-decreasing map of gate classes 0..K-1 (ordered narrow -> wide) onto ``candidates``,
    constant maps excluded: C(m + K - 1, K) - m maps for m candidate widths.

    Non-decreasing because class k means "the k-th smallest width is enough": a map that gave a
    higher class a narrower width would contradict what the gates learned.  A constant map is
    a static width with gates run for nothing; the static and depth-dynamic settings cover it.
    """
    widths = sorted(set(float(w) for w in candidates))
    return [m for m in itertools.combinations_with_replacement(widths, classes) if len(set(m)) > 1]


def default_thresholds(num_labels: int, normalized: bool, count: int = 40) -> list[float]:
    """``count`` exit thresholds evenly spaced over (0, max entropy]: ln C, or 1 when normalised.

    Thresholds cost nothing to try (:func:`exit_steps` replays a recorded pass), so the sweep is fine.
    """
    top = 1.0 if normalized else math.log(num_labels)
    return [round(top * (k + 1) / count, 6) for k in range(count)]


def exit_steps(entropies: np.ndarray, threshold: float) -> np.ndarray:
    """Per input, the index of the off-ramp it leaves at (-1: it runs its whole route).

    ``entropies`` [N, R]: each off-ramp's prediction entropy on each input, off-ramps in layer
    order (early exit runs the full depth, so every input reaches every off-ramp).  An input
    leaves at the first off-ramp whose entropy is strictly below ``threshold``: the exit
    check's rule (``gate.ramps.ExitCheck``).
    """
    leave = entropies < threshold
    return np.where(leave.any(axis=1), leave.argmax(axis=1), -1)


def split_halves(labels: np.ndarray, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Dev indices split in two disjoint halves (search, held-out), sorted; per label when ``stratify``.

    The search half chooses settings; the held-out half measures them.  Each label's indices are
    shuffled with ``seed`` and the first floor(n/2) go to the search half, so both halves keep
    dev's class balance (a regression task is split unstratified).
    """
    rng = np.random.RandomState(seed)
    groups = [np.flatnonzero(labels == value) for value in np.unique(labels)] if stratify else [np.arange(len(labels))]
    search: list[int] = []
    for group in groups:
        shuffled = rng.permutation(group)
        search.extend(shuffled[: len(group) // 2].tolist())
    search_idx = np.array(sorted(search), dtype="int64")
    held_out = np.setdiff1d(np.arange(len(labels)), search_idx)
    return search_idx, held_out


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices of the settings no other beats: none costs at most as much and scores at least as
    well, one of the two strictly.  Sorted by cost; of exact duplicates the first is kept."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -values[i], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if values[i] > best:
            front.append(i)
            best = values[i]
    return front


def best_under_budget(costs: Sequence[float], values: Sequence[float], budget: float) -> Optional[int]:
    """The best-scoring setting costing at most ``budget`` (ties: the cheaper, then the first); None if none fits."""
    fits = [i for i in range(len(costs)) if costs[i] <= budget]
    if not fits:
        return None
    return min(fits, key=lambda i: (-values[i], costs[i], i))


def cascade_chains(costs: Sequence[float], lengths: Sequence[int] = (2, 3)) -> list[tuple[int, ...]]:
    """Every chain of ``lengths`` subnets (indices into ``costs``) whose costs strictly increase: the
    confidence cascades the search tries.  A cheaper subnet after a dearer one would pay twice for
    less, so no other order is worth trying."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    chains = []
    for n in lengths:
        for chain in itertools.combinations(order, n):
            if all(costs[a] < costs[b] for a, b in zip(chain, chain[1:])):
                chains.append(chain)
    return chains


def cascade_answers(entropies: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per input, the cascade stage that answers it: the first stage s < S-1 whose prediction entropy is
    strictly below ``thresholds[s]``, else the last (S-1).

    ``entropies`` [S, N]: each stage's entropy on each input; ``thresholds``: S-1 values.  The
    cascade's own rule (``adaptive.cascade.run_cascade``), so a recorded pass per stage replays
    any thresholds.
    """
    entropies = np.asarray(entropies)
    stages = entropies.shape[0]
    if len(thresholds) != stages - 1:
        raise ValueError(f"a cascade of {stages} subnets needs {stages - 1} thresholds, got {len(thresholds)}")
    sure = entropies[:-1] < np.asarray(thresholds, dtype="float64")[:, None]
    return np.where(sure.any(axis=0), sure.argmax(axis=0), stages - 1)


def upper_hull(costs: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
    """The upper convex hull of the points (cost, value), cheapest first, as its corner points.

    Why: mixing two static subnets at random (a share of the inputs to each) reaches any point on
    the segment between them, so the static subnets "at equal cost" are this hull, not the points
    alone; a dynamic setting gains only what it scores above it (:func:`hull_value`).
    """
    best: dict[float, float] = {}
    for c, v in zip(costs, values):
        best[float(c)] = max(float(v), best.get(float(c), -math.inf))
    hull: list[tuple[float, float]] = []
    for point in sorted(best.items()):
        while len(hull) >= 2:
            (c1, v1), (c2, v2) = hull[-2], hull[-1]
            # drop the middle point if it lies on or below the segment from hull[-2] to the new point
            if (v2 - v1) * (point[0] - c1) <= (point[1] - v1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append(point)
    # past the best point the hull is flat: spending more on a static subnet never has to score less
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[:top + 1]


def hull_value(hull: Sequence[tuple[float, float]], cost: float) -> Optional[float]:
    """The hull's value at ``cost``: linear between corners, flat past the best; None below the cheapest."""
    if not hull or cost < hull[0][0]:
        return None
    for (c1, v1), (c2, v2) in zip(hull, hull[1:]):
        if cost <= c2:
            return v1 + (v2 - v1) * (cost - c1) / (c2 - c1)
    return hull[-1][1]
