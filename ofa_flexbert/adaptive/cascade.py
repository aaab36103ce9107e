"""The confidence cascade: static subnets run in turn, and an input stops at the first one that is sure.

CascadeBERT's recipe for input-adaptive cost, on the subnets of one flexible model: the batch runs
through the cheapest subnet; rows whose prediction entropy is below that stage's threshold keep
its answer; the others are re-batched (padding trimmed to their longest row) into the next, dearer
subnet; the last subnet answers every row that reaches it.  A row's cost is every subnet it ran.

Why beside gates and off-ramps: it needs no trained decision module (a subnet's own softmax is the
confidence), each stage is an ordinary static subnet (so its export is an ordinary graph), and
every stage is a call of the routed encoder's one forward (``encoder.classify``).  The stopping
rule is :func:`ofa_flexbert.adaptive.tradeoff.cascade_answers`, which ``--stage search`` replays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import paddle

from gate.ramps import entropy
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.engine.routes import Route


@dataclass(frozen=True)
class CascadeRun:
    """The subnets one input ran in a cascade, in order; the last one answered it."""

    routes: tuple[Route, ...]

    @property
    def executed(self) -> tuple:
        """Every (layer, width) the input ran, subnet after subnet (a layer may appear once per subnet)."""
        return tuple(step for route in self.routes for step in route.executed)


def run_cascade(model, batch: dict, routes: Sequence[Route], thresholds: Sequence[float], normalized: bool,
                pad_token_id: int) -> tuple[np.ndarray, list[CascadeRun]]:
    """(logits [B, C], what each row ran) for one batch: ``routes[s]`` is stage s's subnet.

    Each stage runs the rows still undecided as one dense batch; a row's logits equal what it gets
    in a batch of its own (the encoder masks padding; tested), so the batch a row rides in never
    changes its answer.
    """
    input_ids, token_type_ids = batch["input_ids"], batch["token_type_ids"]
    rows = int(input_ids.shape[0])
    lengths = (input_ids != pad_token_id).astype("int64").sum(axis=1).numpy()
    logits: np.ndarray | None = None
    ran: list[list[Route]] = [[] for _ in range(rows)]
    remaining = np.arange(rows)
    for stage, route in enumerate(routes):
        index = paddle.to_tensor(remaining, dtype="int64")
        width = int(lengths[remaining].max())
        ids = paddle.gather(input_ids, index, axis=0)[:, :width]
        types = paddle.gather(token_type_ids, index, axis=0)[:, :width]
        with paddle.no_grad():
            out = classify(model, ids, types, route).logits
        stage_logits = out.numpy()
        if logits is None:
            logits = np.zeros((rows, stage_logits.shape[1]), dtype=stage_logits.dtype)
        for row in remaining:
            ran[row].append(route)
        if stage < len(routes) - 1:
            # sure: entropy strictly below the stage's threshold (the rule cascade_answers replays)
            done = entropy(out, normalized).numpy() < thresholds[stage]
        else:
            done = np.ones(len(remaining), dtype=bool)
        logits[remaining[done]] = stage_logits[done]
        remaining = remaining[~done]
        if not len(remaining):
            break
    return logits, [CascadeRun(tuple(r)) for r in ran]
