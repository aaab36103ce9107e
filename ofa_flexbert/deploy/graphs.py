"""Turn one route of a flexible model into a genuinely smaller static model for Paddle Inference.

Why by hand and not PaddleSlim's ``OFA.export``: that slices tensors in place on the model it
is given (so a second subnet exported from the same model is cut from the first -- the
compounding PaddleNLP's ``Trainer.compress`` suffers), leaves ``num_heads`` and the layer list
to the caller, and knows nothing of our depth rules or mean pooling (notes §3.6, §12.8).  Here a
freshly loaded model is narrowed to a :class:`routes.Route`: each kept layer's q/k/v/out and
FFN Linears are replaced by Linears holding the route's first heads and neurons (the ones
importance reordering put first), the other layers are dropped, and the graph is traced
through the same engine forward the stages run (``encoder.bert_forward``), so its pooling and
attention are by construction the ones the model was trained with.

What a directory written by :func:`save` holds (the contract the predictor reads):
``model.json`` (paddle >= 3, PIR) or ``model.pdmodel`` (paddle 2.6) + ``model.pdiparams``,
the tokenizer files, and ``manifest.json`` (:func:`read_manifest`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import paddle

from ofa_flexbert.engine.encoder import encoder_layer
from ofa_flexbert.errors import UserError
from ofa_flexbert.engine.routes import Route, Width

MANIFEST = "manifest.json"
MODEL_PREFIX = "model"
GRAPH_FILES = ("model.json", "model.pdmodel")  # paddle >= 3 writes the first, paddle 2.6 the second
INPUT_NAMES = ("input_ids", "token_type_ids")


def _narrowed(linear: paddle.nn.Linear, out: Optional[int] = None, inp: Optional[int] = None) -> paddle.nn.Linear:
    """A new Linear holding the first ``inp`` rows and ``out`` columns of ``linear`` (weights are [in, out])."""
    rows = int(linear.weight.shape[0]) if inp is None else inp
    cols = int(linear.weight.shape[1]) if out is None else out
    new = paddle.nn.Linear(rows, cols)
    new.weight.set_value(linear.weight[:rows, :cols].clone())
    new.bias.set_value(linear.bias[:cols].clone())
    return new


def shrink(model, route: Route):
    """Narrow ``model`` (a plain ``BertForSequenceClassification``) in place to ``route``; return it.

    The result computes exactly what ``encoder.classify(model, ..., routes=route)`` computes on
    the full model, with only the route's parameters.  The route must not exit early (an exit
    is a runtime decision, not a static shape).  Call it on a model of its own: the full
    weights are gone afterwards.
    """
    if route.exit_after is not None:
        raise ValueError("a static export runs its route to the end; exits are decided at run time")
    bert = model.bert
    kept = [narrow_layer(bert.encoder.layers[index], width) for index, width in route.executed]
    bert.encoder.layers = paddle.nn.LayerList(kept)
    bert.encoder.num_layers = len(kept)
    return model


def narrow_layer(layer, width: Width):
    """Narrow one ``TransformerEncoderLayer`` in place to ``width`` (its first heads and FFN neurons); return it."""
    mha = layer.self_attn
    if width.head_dim != mha.head_dim:
        raise ValueError(f"route head size {width.head_dim} differs from the model's {mha.head_dim}")
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(mha, name, _narrowed(getattr(mha, name), out=width.attention_dim))
    mha.out_proj = _narrowed(mha.out_proj, inp=width.attention_dim)
    mha.num_heads = width.heads  # the stock forward would reshape by it (PaddleNLP #1466)
    layer.linear1 = _narrowed(layer.linear1, out=width.ffn)
    layer.linear2 = _narrowed(layer.linear2, inp=width.ffn)
    return layer


class StaticClassifier(paddle.nn.Layer):
    """``(input_ids, token_type_ids) -> logits`` through the engine: what the static graph records.

    The classifier's own patched forward is a closure over the stock one, which paddle 2.6's
    dygraph-to-static cannot translate; calling ``bert`` (the engine's ``bert_forward``) and the
    classifier from here gives the same graph on both stacks.  Padding is read from
    ``input_ids == pad_token_id``, as in training and evaluation.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids):
        pooled = self.model.bert(input_ids, token_type_ids=token_type_ids)[1]
        return self.model.classifier(pooled)


class LayerGraph(paddle.nn.Layer):
    """``(hidden [B, T, H], additive mask [B, 1, 1, T]) -> hidden``: one encoder layer at one width, as the
    engine runs it (``encoder.encoder_layer``), for the dynamic predictor's per-(layer, width) graphs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, hidden, mask):
        return encoder_layer(self.layer, hidden, mask, None)[0]


LAYER_INPUT_NAMES = ("hidden", "mask")


def layer_graph_name(index: int, width: Width) -> str:
    """``layer<i>_h<heads>``: the file prefix of encoder layer ``index`` at ``width`` in a dynamic export."""
    return f"layer{index}_h{width.heads}"


def save_layer_static(layer, hidden_size: int, prefix: str) -> None:
    """Trace one (narrowed) encoder layer with batch and length free and save it for Paddle Inference."""
    layer.eval()
    spec = [paddle.static.InputSpec(shape=[None, None, hidden_size], dtype="float32", name="hidden"),
            paddle.static.InputSpec(shape=[None, 1, 1, None], dtype="float32", name="mask")]
    trace_and_save(LayerGraph(layer), spec, prefix)


def parameter_count(model) -> int:
    """Parameters the exported model holds (every tensor of its state dict)."""
    total = 0
    for value in model.state_dict().values():
        count = 1
        for d in value.shape:
            count *= int(d)
        total += count
    return total


def save_static(model, directory: str) -> str:
    """Trace ``model`` (batch and length free) and save it in this paddle's inference format; return the graph file.

    paddle >= 3 writes a PIR ``model.json`` (it cannot write a legacy ``.pdmodel`` for BERT,
    notes §13); paddle 2.6 writes ``model.pdmodel``, and its runtime cannot read a ``model.json``.
    """
    model.eval()
    spec = [paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name) for name in INPUT_NAMES]
    trace_and_save(StaticClassifier(model), spec, os.path.join(directory, MODEL_PREFIX))
    return graph_file(directory)


def trace_and_save(layer: paddle.nn.Layer, spec: list, prefix: str) -> None:
    """``paddle.jit.save`` of ``layer`` traced on ``spec``, the way each paddle needs it."""
    if int(paddle.__version__.split(".")[0]) >= 3:
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), prefix)
    else:  # 2.6: to_static ignores input_spec in its default mode; jit.save honours it
        paddle.jit.save(layer, prefix, input_spec=spec)


ONNX_FILE = "model.onnx"
ONNX_OPSET = 13


def save_onnx(directory: str) -> str:
    """Convert the exported Paddle graph in ``directory`` to ``model.onnx`` with paddle2onnx; return its path.

    paddle2onnx 2.x (paddle 3) runs ``pip install`` of optimisers during conversion unless told
    ``optimize_tool="None"``; 1.x (paddle 2.6) has no such option, and on a paddle 3 ``model.json``
    writes an empty file and reports success (notes §13), which is refused here.
    """
    import inspect

    try:
        import paddle2onnx
    except ImportError:
        raise UserError("--format onnx: paddle2onnx is not installed (pip install paddle2onnx; see README)") from None
    path = os.path.join(directory, ONNX_FILE)
    options = {"save_file": path, "opset_version": ONNX_OPSET, "verbose": False, "enable_onnx_checker": True}
    if "optimize_tool" in inspect.signature(paddle2onnx.export).parameters:
        options["optimize_tool"] = "None"
    paddle2onnx.export(graph_file(directory), os.path.join(directory, "model.pdiparams"), **options)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise UserError(f"--format onnx: paddle2onnx {getattr(paddle2onnx, '__version__', '?')} wrote no model for "
                        f"{os.path.basename(graph_file(directory))} (it cannot read this paddle's format)")
    return path


def graph_file(directory: str, prefix: str = MODEL_PREFIX) -> str:
    """The static graph file ``<prefix>.json`` or ``<prefix>.pdmodel`` in an export directory."""
    for name in GRAPH_FILES:
        path = os.path.join(directory, prefix + name[len(MODEL_PREFIX):])
        if os.path.isfile(path):
            return path
    raise UserError(f"{directory}: no exported model (expected {' or '.join(GRAPH_FILES)}; "
                    "write one with --stage export)")


def route_description(route: Route) -> dict[str, Any]:
    """The manifest's shape of a route: original layer indices, heads and FFN neurons per layer."""
    return {"layers": list(route.layers), "heads": [w.heads for w in route.widths],
            "ffn": [w.ffn for w in route.widths], "head_dim": route.widths[0].head_dim}


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    """``manifest.json`` beside the exported model (atomically)."""
    from ofa_flexbert.store.atomic import write_json

    write_json(os.path.join(directory, MANIFEST), manifest)


def read_manifest(directory: str, flag: str = "--export_dir") -> dict[str, Any]:
    """The manifest of an export directory; a one-line error when it is missing or unreadable."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{flag} {directory}: no {MANIFEST} (not a directory written by --stage export)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{flag} {directory}: {MANIFEST} cannot be read ({exc})") from None
    for key in ("task", "num_labels", "max_seq_length", "format"):
        if key not in manifest:
            raise UserError(f"{flag} {directory}: {MANIFEST} lacks '{key}' (written by another version?)")
    return manifest
