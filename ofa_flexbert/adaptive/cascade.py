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
from typing import Callable, Sequence

import numpy as np

from ofa_flexbert.engine.routes import Route


@dataclass(frozen=True)
class CascadeRun:
    """The subnets one input ran in a cascade, in order; the last one answered it."""

    routes: tuple[Route, ...]

    @property
    def executed(self) -> tuple:
        """Every (layer, width) the input ran, subnet after subnet (a layer may appear once per subnet)."""
        return tuple(step for route in self.routes for step in route.executed)


def cascade_rows(lengths: np.ndarray, stages: Sequence[Callable[[np.ndarray, int], np.ndarray]],
                 thresholds: Sequence[float], entropy_of: Callable[[np.ndarray], np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(logits [B, C], the stage that answered each row): the cascade's loop, whatever runs a stage.

    ``stages[s](rows, width)`` returns stage s's logits for the batch rows ``rows`` padded to
    ``width`` tokens (the longest of them); ``lengths`` are the rows' real lengths.  A row stops at
    the first stage but the last whose entropy is strictly below its threshold (the rule
    ``tradeoff.cascade_answers`` replays); the others go on, re-batched.
    """
    rows = len(lengths)
    logits: np.ndarray | None = None
    answered = np.full(rows, len(stages) - 1)
    remaining = np.arange(rows)
    for stage, run in enumerate(stages):
        out = run(remaining, int(lengths[remaining].max()))
        if logits is None:
            logits = np.zeros((rows, out.shape[1]), dtype=out.dtype)
        last = stage == len(stages) - 1
        done = np.ones(len(remaining), dtype=bool) if last else entropy_of(out) < thresholds[stage]
        logits[remaining[done]] = out[done]
        answered[remaining[done]] = stage
        remaining = remaining[~done]
        if not len(remaining):
            break
    return logits, answered


def runs_of(routes: Sequence[Route], answered: np.ndarray) -> list[CascadeRun]:
    """What each row ran: the stages up to the one that answered it."""
    return [CascadeRun(tuple(routes[:stage + 1])) for stage in answered]


def run_cascade(model, batch: dict, routes: Sequence[Route], thresholds: Sequence[float], normalized: bool,
                pad_token_id: int) -> tuple[np.ndarray, list[CascadeRun]]:
    """(logits [B, C], what each row ran) for one batch through the engine: ``routes[s]`` is stage s's subnet.

    Each stage runs the rows still undecided as one dense batch; a row's logits equal what it gets
    in a batch of its own (the encoder masks padding; tested), so the batch a row rides in never
    changes its answer.
    """
    # Imported here, not at the top: the cascade predictor imports this module for its loop alone, and a
    # predictor process loads no dygraph model code (measured: bench/predictor_footprint.py).
    import paddle

    from gate.ramps import entropy
    from ofa_flexbert.engine.encoder import classify

    input_ids, token_type_ids = batch["input_ids"], batch["token_type_ids"]

    def stage(route: Route):
        def run(rows: np.ndarray, width: int) -> np.ndarray:
            index = paddle.to_tensor(rows, dtype="int64")
            ids = paddle.gather(input_ids, index, axis=0)[:, :width]
            types = paddle.gather(token_type_ids, index, axis=0)[:, :width]
            with paddle.no_grad():
                return classify(model, ids, types, route).logits.numpy()
        return run

    lengths = (input_ids != pad_token_id).astype("int64").sum(axis=1).numpy()
    entropy_of = lambda logits: entropy(paddle.to_tensor(logits), normalized).numpy()  # noqa: E731
    logits, answered = cascade_rows(lengths, [stage(r) for r in routes], thresholds, entropy_of)
    return logits, runs_of(routes, answered)
