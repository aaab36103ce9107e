"""Which inputs run together: batches of similar length, so padding does not cost what batching saves.

A batch is padded to its longest input, so a batch of one 50-token and nine 10-token sentences does the
work of 500 tokens for 140 real ones.  Sorting by length and cutting the sorted order where it pays removes
most of that.  Where it pays is a cost model in tokens: a runtime call costs ``call_cost`` tokens' worth of
time whatever its size, plus one unit per padded token.  Pure rule: no framework.
"""
from __future__ import annotations

from typing import Sequence

# What one call costs, in tokens of work.  Measured for the SST-2 w0.5 d0.67 export on this 2-core CPU
# (Paddle Inference, 1 thread, shapes 1x8 .. 32x48 fitted as a + b * tokens): a = 3.9 ms and b = 0.10 ms per
# token on the reference kernels (39 tokens), 4.1 ms and 0.08 ms with oneDNN (51 tokens).  Larger models
# raise both terms, so the ratio moves less than either.  Rough: on a loaded machine the same fit gave 14 and 72
# (bench/runtime_probe.py; docs/decisions.md, "Length-grouped batches").
CALL_COST_TOKENS = 40


def length_groups(lengths: Sequence[int], max_rows: int, call_cost: float = CALL_COST_TOKENS) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of at most ``max_rows``, minimising
    ``sum(call_cost + rows * longest)`` over the batches.

    The inputs are sorted by length (stable: equal lengths keep their order) and the sorted order is cut
    optimally by dynamic programming over cut points (n * max_rows steps), so every index appears in exactly
    one batch and a batch holds consecutive lengths.  Batches come out shortest first.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cutting of the first j sorted inputs
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(max(0, j - max_rows), j):
            cost = best[i] + call_cost + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]

