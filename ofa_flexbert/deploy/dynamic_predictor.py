"""Width- and depth-dynamic inference with every encoder layer on Paddle Inference.

A dynamic export (``--stage export --inference_config`` of a gated or early-exit setting) holds one
static graph per (encoder layer, width the setting can choose), the embeddings, pooler and
classifier weights, the gates and the off-ramps.  Here they are put back together as a model whose
``bert.encoder.layers[i]`` is an :class:`InferenceLayer`: asked by the engine for width ``w`` it runs
the graph of (i, w).  ``adaptive.runner.DynamicModel`` then drives it exactly as ``--stage infer``
drives the trained model -- the same routed encoder loop, gates and exit checks as hooks -- so
routes, predictions and per-input MACs are the infer stage's, at any batch size.  What runs
outside Paddle Inference is small: the embedding lookup, the gate MLPs, the exit heads.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import paddle

from ofa_flexbert.adaptive.setting import Plan
from ofa_flexbert.engine.encoder import ExpandedMask
from ofa_flexbert.engine.routes import Route
from ofa_flexbert.errors import UserError

from .layout import BACKBONE_CONFIG, BACKBONE_WEIGHTS, LAYER_INPUT_NAMES, LAYERS, layer_graph_name, layer_widths
from .runtime import paddle_predictor, run_graph



class InferenceLayer(paddle.nn.Layer):
    """Encoder layer ``index`` for the routed encoder: ``(hidden, [mask, head_mask, width])`` runs the
    Paddle Inference graph of this layer at ``width`` (the engine always names one)."""

    def __init__(self, index: int, predictors: dict[int, Any]):
        super().__init__()
        self.index, self.predictors = index, predictors  # heads -> predictor

    def forward(self, hidden: paddle.Tensor, masks) -> paddle.Tensor:
        mask, _, width = masks
        additive = mask.mask if isinstance(mask, ExpandedMask) else mask
        if width is None or width.heads not in self.predictors:
            raise ValueError(f"layer {self.index}: no exported graph for width {width}")
        out = run_graph(self.predictors[width.heads], LAYER_INPUT_NAMES,
                        (np.ascontiguousarray(hidden.numpy(), dtype="float32"),
                         np.ascontiguousarray(additive.numpy(), dtype="float32")))
        return paddle.to_tensor(out)


def load_backbone(export_dir: str, plan, num_threads: int, onednn: bool):
    """A ``BertForSequenceClassification`` whose encoder layers are :class:`InferenceLayer` s."""
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification

    with open(os.path.join(export_dir, BACKBONE_CONFIG), encoding="utf-8") as fh:
        values = json.load(fh)
    layers = int(values["num_hidden_layers"])
    model = BertForSequenceClassification(BertConfig(**{**values, "num_hidden_layers": 1}))  # layers replaced
    config = model.bert.config
    config.num_hidden_layers, config.pooling = layers, values.get("pooling") or "cls"
    widths = layer_widths(config, plan)
    model.bert.encoder.layers = paddle.nn.LayerList([
        InferenceLayer(i, {w.heads: paddle_predictor(export_dir, num_threads, onednn,
                                                     prefix=os.path.join(LAYERS, layer_graph_name(i, w)))
                           for w in widths})
        for i in range(layers)])
    model.set_state_dict(paddle.load(os.path.join(export_dir, BACKBONE_WEIGHTS)))
    model.eval()
    return model


class DynamicPredictor:
    """Routes, logits and per-input MACs of a dynamic export, on Paddle Inference."""

    def __init__(self, export_dir: str, manifest: dict[str, Any], num_threads: int = 1, onednn: bool = True):
        from ofa_flexbert.adaptive.runner import DynamicModel
        from gate.io import load_gates, load_off_ramps

        plan = Plan.from_entry(manifest["setting"])
        model = load_backbone(export_dir, plan, num_threads, onednn)
        gates = load_gates(export_dir, flag="--export_dir") if plan.gated else None
        ramps = load_off_ramps(export_dir, flag="--export_dir") if plan.exits else None
        if (plan.gated and gates is None) or (plan.exits and ramps is None):
            raise UserError(f"--export_dir {export_dir}: the {plan.mode} export lacks its gates or off-ramps")
        self.dynamic = DynamicModel(model, gates, ramps, plan, manifest.get("depth_rule", "prefix"))

    def run(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> tuple[np.ndarray, list[Route]]:
        """Logits [B, C] and the route each input took."""
        batch = {"input_ids": paddle.to_tensor(input_ids, dtype="int64"),
                 "token_type_ids": paddle.to_tensor(token_type_ids, dtype="int64")}
        return self.dynamic.run(batch)

    def macs(self, route: Route, length: int) -> int:
        return self.dynamic.macs(route, length)
