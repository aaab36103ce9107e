"""A segment export run on Paddle Inference: numpy between its graphs, nothing in dygraph.

A segment export (``--stage export --inference_config`` of a gated or early-exit setting, the
default ``--dynamic_graphs segments``) holds the embeddings' graph and one graph per (segment,
width), each ending with the logits of what decides after it (``deploy.segments``, ``graphs.SegmentGraph``);
with ``--format onnx`` each also as ONNX, which this predictor runs on onnxruntime when asked.
A batch runs through the embeddings; then, segment by segment, its rows are grouped by the width
their last gate chose and each group runs that segment's graph once, padding trimmed to the group's
longest row.  After a segment, rows whose off-ramp entropy is strictly below the threshold leave
with the off-ramp's logits (they are not carried into the next call), then each gate's rule picks
the survivors' next width -- the engine's hooks in the engine's order (``adaptive.runner``), so
routes, predictions and per-input MACs are ``--stage infer``'s; the export's check compares them on
dev before the export is moved into place.  This module imports no trained-model code: the
predictor process needs Paddle Inference, numpy and the pure rules.
"""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from ofa_flexbert.adaptive.cost import dynamic_macs
from ofa_flexbert.adaptive.setting import Plan
from ofa_flexbert.engine.routes import Route, Width

from gate.settings import GateSettings, choose_classes

from .layout import EMBEDDINGS_GRAPH, INPUT_NAMES, LAYER_INPUT_NAMES, SEGMENTS, segment_graph_name
from .runtime import entropy, graph_runner
from .segments import Segment


def manifest_width(entry: dict[str, Any]) -> Width:
    """A manifest's ``{"heads", "head_dim", "ffn"}``."""
    return Width(int(entry["heads"]), int(entry["head_dim"]), int(entry["ffn"]))


class SegmentPredictor:
    """Logits, routes and per-input MACs of a segment export (see the module docstring)."""

    def __init__(self, export_dir: str, manifest: dict[str, Any], num_threads: int = 1, onednn: bool = True,
                 runtime: str = "paddle"):
        self.plan = Plan.from_entry(manifest["setting"])
        self.segments = [Segment.from_json(s) for s in manifest["segments"]]
        self.start = Route(tuple(manifest["route"]["layers"]), tuple(
            Width(h, int(manifest["route"]["head_dim"]), f) for h, f in zip(manifest["route"]["heads"],
                                                                              manifest["route"]["ffn"])))
        self.class_widths = [manifest_width(w) for w in manifest["class_widths"]]
        self.gates = GateSettings.from_json(manifest["gate_settings"]) if manifest.get("gate_settings") else None
        self.ramp_layers = manifest.get("off_ramps")
        self.pooling = manifest.get("pooling") or "cls"
        self.config = SimpleNamespace(hidden_size=int(manifest["hidden_size"]), num_labels=int(manifest["num_labels"]),
                                      pooling=manifest.get("pooling"))
        self.pad_token_id = int(manifest["pad_token_id"])

        def load(prefix: str):
            return graph_runner(export_dir, os.path.join(SEGMENTS, prefix), num_threads, onednn, runtime)

        self.embeddings = load(EMBEDDINGS_GRAPH)
        widths = sorted({w.heads: w for w in (self.class_widths if self.gates else self.start.widths[:1])}.values(),
                        key=lambda w: w.heads)
        self.graphs = {(j, w.heads): load(segment_graph_name(j, w)) for j in range(len(self.segments)) for w in widths}
        self.calls: list[tuple[int, int, int]] = []  # (segment, heads, rows) of the last run's graph calls

    def run(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> tuple[np.ndarray, list[Route]]:
        """Logits [B, C] and the route each input took."""
        ids = np.ascontiguousarray(input_ids, dtype="int64")
        outputs = self.embeddings(INPUT_NAMES, (ids, np.ascontiguousarray(token_type_ids, "int64")))
        hidden, mask = outputs[0], outputs[1]
        batch = len(ids)
        lengths = (ids != self.pad_token_id).sum(axis=1)
        rows = np.arange(batch)
        start_width = self.start.widths[0]
        width = [start_width] * batch  # per original row: the width its next segment runs at
        executed: list[list[Width]] = [[] for _ in range(batch)]
        exit_after: list = [None] * batch
        logits = np.zeros((batch, self.config.num_labels), dtype="float32")
        if self.gates is not None:
            for row, cls in zip(rows, choose_classes(outputs[2], self.plan.gate_threshold)):
                width[row] = self.class_widths[int(cls)]
        self.calls = []
        for j, segment in enumerate(self.segments):
            hidden, mask, rows, decided = self._segment(j, segment, hidden, mask, rows, lengths, width, executed)
            if segment.ramp is not None and self.plan.exits:
                leave = entropy(decided["ramp"], self.plan.normalized_entropy) < self.plan.exit_threshold
                for row, answer in zip(rows[leave], decided["ramp"][leave]):
                    logits[row], exit_after[row] = answer, segment.end
                keep = ~leave
                hidden, mask, rows = hidden[keep], mask[keep], rows[keep]
                decided = {k: v[keep] for k, v in decided.items()}
            if segment.last:
                logits[rows] = decided["final"]
            elif segment.gate is not None and self.gates is not None:
                for row, cls in zip(rows, choose_classes(decided["gate"], self.plan.gate_threshold)):
                    width[row] = self.class_widths[int(cls)]
            if len(rows) == 0:
                break
        routes = [Route(self.start.layers, tuple(executed[r]) + self.start.widths[len(executed[r]):],
                        exit_after[r]) for r in range(batch)]
        return logits, routes

    def _segment(self, j: int, segment: Segment, hidden: np.ndarray, mask: np.ndarray, rows: np.ndarray,
                 lengths: np.ndarray, width: list, executed: list) -> tuple:
        """Run segment ``j`` on every running row, one call per width group (padding trimmed to the
        group's longest row); returns the rows' new hidden states, masks, original indices (in the new
        order) and the decision outputs (``gate``, ``ramp``, ``final``) in that order."""
        groups: dict[int, list[int]] = {}
        for p, row in enumerate(rows):
            groups.setdefault(width[row].heads, []).append(p)
        names = ["hidden", *segment.outputs(self.gates is not None, self.ramp_layers is not None)]
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
        masks, order, longest = [], [], int(hidden.shape[1])
        for heads, positions in groups.items():
            span = int(lengths[rows[positions]].max())
            sub_hidden = np.ascontiguousarray(hidden[positions, :span])
            sub_mask = np.ascontiguousarray(mask[positions, :, :, :span])
            out = self.graphs[(j, heads)](LAYER_INPUT_NAMES, (sub_hidden, sub_mask))
            self.calls.append((j, heads, len(positions)))
            for name, value in zip(names, out):
                if name == "hidden" and span < longest:  # back to the batch's length (padding rows stay masked)
                    value = np.pad(value, ((0, 0), (0, longest - span), (0, 0)))
                pieces[name].append(value)
            masks.append(mask[positions])
            order.extend(positions)
            for p in positions:
                executed[rows[p]].extend([width[rows[p]]] * len(segment.layers))
        joined = {name: np.concatenate(values) for name, values in pieces.items()}
        return joined.pop("hidden"), np.concatenate(masks), rows[order], joined

    def macs(self, route: Route, length: int) -> int:
        """Everything one ``length``-token input ran: layers, head, gates and exit checks."""
        return dynamic_macs(self.config, route, length, self.pooling, self.gates if self.plan.gated else None,
                            self.ramp_layers if self.plan.exits else None)
