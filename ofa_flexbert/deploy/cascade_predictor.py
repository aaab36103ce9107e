"""A cascade export run on Paddle Inference or onnxruntime: its static subnets in turn, numpy between them.

A cascade export (``--stage export --inference_config`` of a ``cascade`` setting) is a folder whose
manifest lists its stages, each an ordinary static subnet export in a subfolder (graph, tokenizer,
manifest, its own check).  A batch runs through the first; rows whose prediction entropy is below
the stage's threshold keep its answer; the others are gathered into a smaller batch, padding
trimmed to their longest row, for the next -- the loop of ``adaptive.cascade.cascade_rows``, which
``--stage infer`` runs too and the export's check compares with on dev.  Nothing runs in dygraph.
"""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from ofa_flexbert.adaptive.cascade import CascadeRun, cascade_rows, runs_of
from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.routes import Route, Width

from .layout import read_manifest
from .runtime import StaticGraph, entropy


def stage_route(manifest: dict[str, Any]) -> Route:
    """The route a static export's manifest describes (layers, heads and FFN neurons per layer)."""
    widths = tuple(Width(h, int(manifest["head_dim"]), f) for h, f in zip(manifest["heads"], manifest["ffn"]))
    return Route(tuple(manifest["layers"]), widths)


class CascadePredictor:
    """Logits and what each input ran, for a cascade export (see the module docstring)."""

    def __init__(self, export_dir: str, manifest: dict[str, Any], num_threads: int = 1, onednn: bool = True,
                 runtime: str = "paddle", pad_token_id: int = 0):
        self.thresholds = [float(t) for t in manifest["setting"]["cascade_thresholds"]]
        self.normalized = bool(manifest["setting"].get("normalized_entropy", False))
        self.pad_token_id = pad_token_id
        folders = [os.path.join(export_dir, name) for name in manifest["stages"]]
        self.graphs = [StaticGraph(folder, num_threads, onednn, runtime) for folder in folders]
        members = [read_manifest(folder) for folder in folders]
        self.routes = [stage_route(m) for m in members]
        self.config = SimpleNamespace(hidden_size=int(manifest["hidden_size"]), num_labels=int(manifest["num_labels"]),
                                      pooling=manifest.get("pooling"))

    def run(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> tuple[np.ndarray, list[CascadeRun]]:
        """Logits [B, C] and, per input, the stages' routes it ran (the last one answered)."""
        def stage(graph: StaticGraph):
            return lambda rows, width: graph(input_ids[rows, :width], token_type_ids[rows, :width])

        lengths = (input_ids != self.pad_token_id).sum(axis=1)
        logits, answered = cascade_rows(lengths, [stage(g) for g in self.graphs], self.thresholds,
                                        lambda logits: entropy(logits, self.normalized))
        return logits, runs_of(self.routes, answered)

    def macs(self, run: CascadeRun, length: int) -> int:
        """Every subnet one ``length``-token input ran."""
        return sum(route_macs(self.config, route, length) for route in run.routes)
