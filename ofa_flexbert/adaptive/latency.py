"""A measured latency model: what one graph call costs on this machine, and what a setting costs per input (pure).

Why not MACs: this CPU does not pay in proportion to them.  A runtime call has a fixed cost, every op
in a graph a small one of its own, and a batch pays for its padding; a dynamic setting makes more,
smaller calls than a static subnet (docs/benchmarks.md, "Segment graphs against per-layer graphs").
So ``--stage search --cost latency`` ranks settings by milliseconds predicted from a table that
``--stage profile`` measured here, for the calls the setting would make.

The table holds, per *probe* graph, its median time at every shape of a grid of batch sizes B and
lengths T; between grid points (and beyond them) a probe's time is bilinear in (B, T) (:meth:`CostTable.ms`:
measured, a call's time is close to linear in either at a fixed other; no global formula fitted the
grid within 20%).  The probes are the parts every exported graph is made of:

* ``call``: a graph that passes hidden states and mask through -- the runtime's own per-call cost;
* ``embeddings``: token ids to hidden states and mask (a segment export's first graph, a static graph's start);
* ``layer_h<heads>``: the encoder's layers at a width (its heads name it, as the export's graph files do),
  the whole stack, so that weights are read as a real graph reads them (``meta["probe_layers"]``: how many);
  ``layer_h<heads>_l<k>``: the first k of them, one per shallower depth of the profiled --depth_mult_list;
* ``head``: pooling, pooler and classifier on the hidden states (a gate's MLP and an off-ramp have its shape).

A graph of k layers at one width with m heads inside costs its start (``call``, or ``embeddings`` when it
starts from ids) plus the *marginal* cost of each part: its probe's time less ``call``'s, per layer for
the layer probes (:meth:`CostTable.cost`).  A layer's marginal cost depends on how many layers' weights the
predictor's loop reads between two calls of the same graph (a call's ``depth``): at batch 1 a layer's time
is mostly reading its weights, and three layers' weights may stay in a cache that six layers' overflow
(measured on onnxruntime: a 3-layer full-width graph at a third of the 6-layer one's time, not half).  So it
is read from the layer probes of that width at the depths around it, linear in depth between them
(:meth:`CostTable.layer_marginal`); a table with the whole stack only prices every depth alike.

A setting is a set of such calls on the predictor's batches (:class:`ChainShape`, :class:`SegmentShape`:
the loops of the static/cascade and segment predictors, vectorised over batches), and its latency per
input is their sum divided by the inputs.  Not modelled: what a call pays when another graph ran just
before it (its weights partly evicted), which cascades and segment exports do on every batch
(docs/decisions.md, the latency model).  :func:`read_cost_table` / :func:`write_cost_table`: the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ofa_flexbert.errors import UserError
from ofa_flexbert.store.atomic import write_json
from ofa_flexbert.store.outputs import COST_TABLE
from .setting import QUANTIZED

CALL, EMBEDDINGS, HEAD = "call", "embeddings", "head"
LAYER_PREFIX = "layer_h"
_LAYER_PROBE = re.compile(rf"^{LAYER_PREFIX}(\d+)(?:_l(\d+))?$")


def layer_probe(heads: int, layers: Optional[int] = None) -> str:
    """The probe name of encoder layers at ``heads`` attention heads: the whole stack (``layer_h<heads>``),
    or with ``layers`` a stack of that many (``layer_h<heads>_l<layers>``)."""
    return f"{LAYER_PREFIX}{heads}" if layers is None else f"{LAYER_PREFIX}{heads}_l{layers}"


@dataclass(frozen=True)
class Calls:
    """Graph calls a predictor makes, one entry per call: its width (``heads``, the same in each of its
    ``layers``), the heads inside it (``outputs``: gates, off-ramps, the final head), ``rows`` padded to
    ``span`` tokens, whether it starts from token ids (``embeddings``), ``index``: the segment (or
    chain stage) it runs, -1 for a segment export's embeddings, and ``depth``: the encoder layers of
    every graph the predictor's loop calls, whose weights compete for the cache with this call's."""

    heads: np.ndarray
    layers: np.ndarray
    outputs: np.ndarray
    rows: np.ndarray
    span: np.ndarray
    embeddings: np.ndarray
    index: np.ndarray
    depth: np.ndarray

    @classmethod
    def join(cls, parts: Sequence["Calls"]) -> "Calls":
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    def as_tuples(self) -> list[tuple[int, int, int, int, int, bool, int]]:
        """(heads, layers, outputs, rows, span, embeddings, index) per call, for reading and tests."""
        return [(int(h), int(k), int(m), int(r), int(s), bool(e), int(i)) for h, k, m, r, s, e, i in
                zip(self.heads, self.layers, self.outputs, self.rows, self.span, self.embeddings, self.index)]


def _calls(heads, layers, outputs, rows, span, embeddings, index, depth) -> Calls:
    n = len(rows)
    full = lambda v, dtype="int64": np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()  # noqa: E731
    return Calls(full(heads), full(layers), full(outputs), full(rows), full(span), full(embeddings, "bool"),
                 full(index), full(depth))


@dataclass(frozen=True)
class CostTable:
    """Per probe, ``[[B, T, median ms], ...]`` over a full grid of shapes (``points``), and what was
    measured (``meta``: model sizes, kernels, threads, machine)."""

    points: dict[str, list[list[float]]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grids = {}
        for name, pts in self.points.items():
            rows = np.array(sorted({float(p[0]) for p in pts}))
            spans = np.array(sorted({float(p[1]) for p in pts}))
            values = np.full((len(rows), len(spans)), np.nan)
            for b, t, ms in pts:
                values[np.searchsorted(rows, float(b)), np.searchsorted(spans, float(t))] = float(ms)
            if len(rows) < 2 or len(spans) < 2 or np.isnan(values).any():
                raise ValueError(f"probe '{name}' needs a full grid of at least 2 batch sizes x 2 lengths")
            grids[name] = (rows, spans, values)
        object.__setattr__(self, "_grids", grids)
        stacks: dict[int, list[tuple[int, str]]] = {}
        for name in self.points:
            match = _LAYER_PROBE.match(name)
            if match:
                stacks.setdefault(int(match.group(1)), []).append((self.probe_layers(name), name))
        object.__setattr__(self, "_stacks", {heads: sorted(found) for heads, found in stacks.items()})

    @property
    def probes(self) -> set[str]:
        return set(self.points)

    def ms(self, probe: str, rows, span) -> np.ndarray:
        """The time of one call of ``probe`` at each (rows, span): bilinear in the grid, extrapolated
        linearly beyond it, never below zero."""
        grid_rows, grid_spans, values = self._grids[probe]  # type: ignore[attr-defined]
        r, s = np.asarray(rows, dtype="float64"), np.asarray(span, dtype="float64")
        i = np.clip(np.searchsorted(grid_rows, r, side="right") - 1, 0, len(grid_rows) - 2)
        j = np.clip(np.searchsorted(grid_spans, s, side="right") - 1, 0, len(grid_spans) - 2)
        u = (r - grid_rows[i]) / (grid_rows[i + 1] - grid_rows[i])
        v = (s - grid_spans[j]) / (grid_spans[j + 1] - grid_spans[j])
        value = (values[i, j] * (1 - u) * (1 - v) + values[i + 1, j] * u * (1 - v)
                 + values[i, j + 1] * (1 - u) * v + values[i + 1, j + 1] * u * v)
        return np.maximum(value, 0.0)

    def probe_layers(self, probe: str) -> int:
        """The encoder layers in ``probe`` (``meta["probe_layers"]``; 1 when not recorded)."""
        return max(1, int((self.meta.get("probe_layers") or {}).get(probe, 1)))

    def probed_widths(self) -> list[int]:
        """The widths (attention heads) the table has layer probes at, narrowest first."""
        return sorted(self._stacks)  # type: ignore[attr-defined]

    def probed_depths(self, heads: int) -> list[int]:
        """The stack depths the layer probes at ``heads`` were timed at (empty: no probe at that width)."""
        return [layers for layers, _ in self._stacks.get(heads, [])]  # type: ignore[attr-defined]

    def marginal(self, probe: str, rows, span) -> np.ndarray:
        """What ``probe``'s part adds to a graph that holds it: its time less a call's (per layer, for a
        probe of several layers)."""
        return np.maximum(self.ms(probe, rows, span) - self.ms(CALL, rows, span), 0.0) / self.probe_layers(probe)

    def layer_marginal(self, heads: int, depth, rows, span) -> np.ndarray:
        """What one encoder layer at ``heads`` adds to a call whose loop reads ``depth`` layers' weights (see
        the module docstring): the per-layer marginal of the layer probes at that width, linear in depth
        between the two probed depths around ``depth``, the nearest probe's beyond them."""
        stacks = self._stacks[heads]  # type: ignore[attr-defined]
        depth, rows, span = np.broadcast_arrays(*(np.asarray(v, dtype="float64") for v in (depth, rows, span)))
        per_layer = np.stack([self.marginal(name, rows.ravel(), span.ravel()) for _, name in stacks])  # [probes, n]
        if len(stacks) == 1:
            return per_layer[0].reshape(rows.shape)
        probed = np.array([layers for layers, _ in stacks], dtype="float64")
        d = np.clip(depth.ravel(), probed[0], probed[-1])
        i = np.clip(np.searchsorted(probed, d, side="right") - 1, 0, len(probed) - 2)
        u = (d - probed[i]) / (probed[i + 1] - probed[i])
        at = np.arange(d.size)
        return (per_layer[i, at] * (1 - u) + per_layer[i + 1, at] * u).reshape(rows.shape)

    def cost(self, calls: Calls) -> np.ndarray:
        """The predicted time of each call (see the module docstring)."""
        total = np.where(calls.embeddings, self.ms(EMBEDDINGS, calls.rows, calls.span), self.ms(CALL, calls.rows, calls.span))
        total = total + calls.outputs * self.marginal(HEAD, calls.rows, calls.span)
        for heads in np.unique(calls.heads[calls.layers > 0]):
            at = (calls.heads == heads) & (calls.layers > 0)
            total[at] += calls.layers[at] * self.layer_marginal(int(heads), calls.depth[at], calls.rows[at],
                                                                calls.span[at])
        return total

    def to_json(self) -> dict[str, Any]:
        return {"points": self.points, "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CostTable":
        points = {str(k): [[float(x) for x in p] for p in v] for k, v in data["points"].items()}
        if any(len(p) != 3 for v in points.values() for p in v):
            raise ValueError("every point is [batch size, length, ms]")
        return cls(points, dict(data.get("meta") or {}))


def write_cost_table(output_dir: str, table: CostTable) -> str:
    """``--stage profile``: ``table`` as cost_table.json in ``output_dir`` (written atomically); returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, COST_TABLE)
    write_json(path, table.to_json())
    return path


def read_cost_table(path: str) -> CostTable:
    """The table in ``path`` (a file, or a folder holding cost_table.json); a one-line error naming
    --cost_table when it is missing or not one."""
    if os.path.isdir(path):
        path = os.path.join(path, COST_TABLE)
    try:
        with open(path, encoding="utf-8") as fh:
            return CostTable.from_json(json.load(fh))
    except FileNotFoundError:
        raise UserError(f"--cost_table {path}: no such file (write one with --stage profile)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"--cost_table {path}: not a cost table written by --stage profile "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def table_kernels(meta: dict) -> str:
    """What a cost table timed, in a few words (``reference kernels``, ``oneDNN``, ``INT8 onnxruntime``),
    from its ``meta`` as ``--stage profile`` writes it: the one wording of the profile's and the search's lines."""
    if meta.get("runtime") == "onnxruntime":
        return ("INT8 " if meta.get("quantize") == QUANTIZED else "") + "onnxruntime"
    return "oneDNN" if meta.get("onednn") else "reference kernels"


def check_table(table: CostTable, path: str, hidden_size: int, heads: Sequence[int]) -> None:
    """A one-line error when ``table`` (read from ``path``) cannot price this model's calls: another hidden
    size, or a width (``heads``) it has no layer probe for."""
    profiled = table.meta.get("hidden_size")
    if profiled is not None and int(profiled) != int(hidden_size):
        raise UserError(f"--cost_table {path}: profiled for hidden size {profiled}, the model has {hidden_size} "
                        "(run --stage profile on this model)")
    for probe in (CALL, EMBEDDINGS, HEAD):
        if probe not in table.probes:
            raise UserError(f"--cost_table {path}: no '{probe}' probe (written by --stage profile?)")
    missing = [h for h in sorted(set(heads)) if layer_probe(h) not in table.probes]
    if missing:
        have = sorted(h for h in table.probed_widths() if layer_probe(h) in table.probes)
        raise UserError(f"--cost_table {path}: no layer probe at {','.join(map(str, missing))} heads (profiled: "
                        f"{','.join(map(str, have))}); run --stage profile with every --width_mult_list width")


def group_ids(groups: Sequence[Sequence[int]], count: int) -> np.ndarray:
    """Per input (``count`` of them), the index of the batch holding it in ``groups``; -1 for none."""
    ids = np.full(count, -1, dtype="int64")
    for g, members in enumerate(groups):
        ids[np.asarray(members, dtype="int64")] = g
    return ids


def _batched(gid: np.ndarray, lengths: np.ndarray, alive: np.ndarray, key: np.ndarray):
    """Per distinct (batch, key) among the ``alive`` inputs: the key, its rows and its longest length."""
    chosen = np.flatnonzero(alive & (gid >= 0))
    if len(chosen) == 0:
        empty = np.zeros(0, dtype="int64")
        return empty, empty, empty, empty
    pairs, inverse = np.unique(np.stack([gid[chosen], key[chosen]], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows = np.bincount(inverse, minlength=len(pairs))
    span = np.zeros(len(pairs), dtype="int64")
    np.maximum.at(span, inverse, lengths[chosen])
    return pairs[:, 0], pairs[:, 1], rows, span


@dataclass(frozen=True)
class ChainShape:
    """What a static subnet (one stage) or a cascade runs: each stage's (heads, layers), and per input the
    stage that answered it (``answered``).  Stage s runs on the rows of each batch that reach it, padding
    trimmed to their longest (``cascade.cascade_rows``)."""

    stages: tuple[tuple[int, int], ...]
    answered: np.ndarray

    def calls(self, gid: np.ndarray, lengths: np.ndarray) -> Calls:
        depth = sum(layers for _, layers in self.stages)  # a cascade's stages take turns on every batch
        parts = []
        for s, (heads, layers) in enumerate(self.stages):
            _, _, rows, span = _batched(gid, lengths, self.answered >= s, np.zeros_like(gid))
            parts.append(_calls(heads, layers, 1, rows, span, True, s, depth))
        return Calls.join(parts)


@dataclass(frozen=True)
class SegmentShape:
    """What a segment export runs (``segment_predictor.SegmentPredictor.run``'s loop): per batch the
    embeddings' graph (gate 0 inside when ``gated``), then per segment j -- ``segments[j]``: its (layers,
    heads inside) -- one call per width among the rows still running, padding trimmed to the group's
    longest.  Per input: its heads in each segment (``widths`` [N, S]) and how many segments it ran (``runs``);
    ``ends``: the step each segment ends at."""

    segments: tuple[tuple[int, int], ...]
    widths: np.ndarray
    runs: np.ndarray
    gated: bool
    ends: tuple[int, ...] = ()

    def leaving_after(self, layers_run: np.ndarray) -> "SegmentShape":
        """The same routes, each input leaving after ``layers_run`` of its layers (an exit threshold's replay)."""
        return dataclasses.replace(self, runs=np.searchsorted(np.array(self.ends), np.asarray(layers_run)) + 1)

    def calls(self, gid: np.ndarray, lengths: np.ndarray) -> Calls:
        depth = sum(layers for layers, _ in self.segments)  # the route: its segments take turns on every batch
        _, _, rows, span = _batched(gid, lengths, np.ones(len(gid), dtype=bool), np.zeros_like(gid))
        parts = [_calls(0, 0, int(self.gated), rows, span, True, -1, depth)]
        for j, (layers, outputs) in enumerate(self.segments):
            _, heads, rows, span = _batched(gid, lengths, self.runs > j, self.widths[:, j])
            parts.append(_calls(heads, layers, outputs, rows, span, False, j, depth))
        return Calls.join(parts)


def segment_shape(segments: Sequence[Any], routes: Sequence[Any], layers_run: np.ndarray, gated: bool,
                  exits: bool) -> SegmentShape:
    """The :class:`SegmentShape` of inputs that took ``routes`` (``engine.routes.Route``) through the
    ``segments`` (``deploy.segments.Segment``) of a setting, each running ``layers_run`` of its route's
    layers: its width in each segment is its route's at the segment's first step."""
    widths = np.array([[r.widths[s.start].heads for s in segments] for r in routes], dtype="int64")
    shape = SegmentShape(tuple((len(s.layers), len(s.outputs(gated, exits))) for s in segments), widths,
                         np.zeros(len(routes), dtype="int64"), gated, tuple(s.end for s in segments))
    return shape.leaving_after(layers_run)  # runs: up to the segment ending where it left


def per_input_ms(table: CostTable, shape, gid: np.ndarray, lengths: np.ndarray) -> float:
    """Mean predicted milliseconds per input of ``shape`` run on the batches ``gid`` names (see :func:`group_ids`)."""
    count = int((gid >= 0).sum())
    return float(table.cost(shape.calls(gid, lengths)).sum()) / max(count, 1)
