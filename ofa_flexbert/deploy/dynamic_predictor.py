"""Width- and depth-dynamic inference with every encoder layer on Paddle Inference.

A dynamic export (``--stage export --inference_config`` of a gated or early-exit setting) holds one
static graph per (encoder layer, width the setting can choose), the embeddings, pooler and
classifier weights, the gates and the off-ramps.  Here they are put back together as a model whose
``bert.encoder.layers[i]`` is an :class:`InferenceLayer`: asked by the engine for width ``w`` it runs
the graph of (i, w).  ``gate.inference.DynamicModel`` then drives it exactly as ``--stage infer``
drives the trained model -- the same routed encoder loop, gates and exit checks as hooks -- so
routes, predictions and per-input MACs are the infer stage's, at any batch size.  What runs
outside Paddle Inference is small: the embedding lookup, the gate MLPs, the exit heads.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np
import paddle

from ofa_flexbert.engine.encoder import ExpandedMask
from ofa_flexbert.errors import UserError
from .graphs import LAYER_INPUT_NAMES, layer_graph_name
from ofa_flexbert.engine.routes import Route, Width, config_width

BACKBONE_CONFIG, BACKBONE_WEIGHTS = "backbone_config.json", "backbone.pdparams"
LAYERS = "layers"  # the folder of the per-(layer, width) graphs


class InferenceLayer(paddle.nn.Layer):
    """Encoder layer ``index`` for the routed encoder: ``(hidden, [mask, head_mask, width])`` runs the
    Paddle Inference graph of this layer at ``width`` (the engine always names one)."""

    def __init__(self, index: int, predictors: dict[int, Any]):
        super().__init__()
        self.index, self.predictors = index, predictors  # heads -> predictor

    def forward(self, hidden: paddle.Tensor, masks) -> paddle.Tensor:
        from .predictor import run_graph

        mask, _, width = masks
        additive = mask.mask if isinstance(mask, ExpandedMask) else mask
        if width is None or width.heads not in self.predictors:
            raise ValueError(f"layer {self.index}: no exported graph for width {width}")
        out = run_graph(self.predictors[width.heads], LAYER_INPUT_NAMES,
                        (np.ascontiguousarray(hidden.numpy(), dtype="float32"),
                         np.ascontiguousarray(additive.numpy(), dtype="float32")))
        return paddle.to_tensor(out)


def layer_widths(config, plan) -> list[Width]:
    """The distinct widths a plan can run a layer at, narrowest first: its --width_mult_list, and full
    width for a gated plan (the route a gated input starts from)."""
    multipliers = list(plan.widths) + ([1.0] if plan.gated else [])
    return sorted({config_width(config, w) for w in multipliers}, key=lambda w: w.heads)


def plan_of_setting(setting: dict[str, Any]):
    """The ``gate.inference.Plan`` of an --inference_config entry (the format --stage search writes)."""
    from ofa_flexbert.adaptive.runner import Plan

    return Plan(setting["mode"], tuple(float(w) for w in setting["width_mult_list"]),
                float(setting.get("depth_mult", 1.0)), bool(setting.get("early_exit", False)),
                float(setting.get("exit_threshold", 0.0)), bool(setting.get("normalized_entropy", False)))


def save_backbone(model, export_dir: str) -> None:
    """The weights that do not live in a layer graph (embeddings, pooler, classifier) and the config."""
    import io

    from ofa_flexbert.store.atomic import write_bytes, write_json

    state = {k: v for k, v in model.state_dict().items() if ".encoder.layers." not in k}
    buffer = io.BytesIO()
    paddle.save(state, buffer)
    write_bytes(os.path.join(export_dir, BACKBONE_WEIGHTS), buffer.getvalue())
    write_json(os.path.join(export_dir, BACKBONE_CONFIG), model.bert.config.to_dict())


def save_layers(load_fresh: Callable[[], Any], plan, export_dir: str) -> tuple[int, int]:
    """One static graph per (encoder layer, width the plan can run it at) under ``layers/``; returns how
    many graphs and their parameters in all.

    Each width starts from a fresh model (``load_fresh()``), so narrowing never compounds."""
    from .graphs import narrow_layer, parameter_count, save_layer_static

    count = parameters = 0
    model = load_fresh()
    for width in layer_widths(model.bert.config, plan):
        model = model or load_fresh()
        hidden = model.bert.config.hidden_size
        for index, layer in enumerate(model.bert.encoder.layers):
            narrow_layer(layer, width)
            save_layer_static(layer, hidden, os.path.join(export_dir, LAYERS, layer_graph_name(index, width)))
            count, parameters = count + 1, parameters + parameter_count(layer)
        model = None
    return count, parameters


def load_backbone(export_dir: str, plan, num_threads: int, onednn: bool):
    """A ``BertForSequenceClassification`` whose encoder layers are :class:`InferenceLayer` s."""
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification

    from .predictor import paddle_predictor

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

        plan = plan_of_setting(manifest["setting"])
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
