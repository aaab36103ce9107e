"""Write narrowed models as graphs for Paddle Inference and onnxruntime.

Every graph is traced through the same engine forward the stages run (``encoder.bert_forward``,
``encoder.encoder_layer``), so its pooling and attention are by construction the ones the model
was trained with.  Where each file goes is :mod:`layout`'s business.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import paddle

from ofa_flexbert.engine.encoder import additive_mask, encoder_layer, final_head, pool, pooling_of, token_weights
from ofa_flexbert.engine.routes import config_width
from ofa_flexbert.errors import UserError

from .layout import (BACKBONE_CONFIG, BACKBONE_WEIGHTS, EMBEDDINGS_GRAPH, INPUT_NAMES, LAYERS, MODEL_PREFIX, onnx_file,
                     SEGMENTS, graph_file, layer_graph_name, layer_widths, segment_graph_name)
from .narrow import narrow_layer, parameter_count
from .segments import Segment

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


class EmbeddingGraph(paddle.nn.Layer):
    """``(input_ids, token_type_ids) -> (hidden [B, T, H], additive mask [B, 1, 1, T][, gate 0's logits])``:
    the start of a segment export, as ``encoder.classify`` starts (padding read from the pad id).  Gate 0
    reads the masked token mean of the embeddings (``gate.modules.gate_input_at`` at step 0)."""

    def __init__(self, model, gate=None):
        super().__init__()
        self.bert, self.gate = model.bert, gate

    def forward(self, input_ids, token_type_ids):
        additive = additive_mask(self.bert, input_ids, None)
        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if self.gate is None:
            return hidden, additive
        return hidden, additive, self.gate(pool("mean", hidden, token_weights(additive)))


class SegmentGraph(paddle.nn.Layer):
    """``(hidden, additive mask) -> (hidden[, gate logits][, off-ramp logits][, final logits])``: the
    layers of one segment at one width (the engine's ``encoder_layer``, as :class:`LayerGraph`), then
    what decides after them, on the model's pooled vector there -- the next gate's MLP (what
    ``GateRouter`` runs), the off-ramp's head (``ExitCheck``) and, at the route's end, the model's own
    pooler and classifier (``encoder.final_head``).  Outputs follow ``layout.SEGMENT_OUTPUTS``."""

    def __init__(self, model, segment: Segment, gate=None, ramps=None):
        super().__init__()
        if model.bert.encoder.norm is not None:  # classify normalises before the head, the exit check does not
            raise ValueError("segment graphs assume an encoder without a final norm (BERT's)")
        self.layers = paddle.nn.LayerList([model.bert.encoder.layers[i] for i in segment.layers])
        self.pooling, self.gate = pooling_of(model.bert), gate
        self.ramps, self.ramp = (ramps, segment.ramp) if ramps is not None and segment.ramp is not None else (None, None)
        self.model = model if segment.last else None

    def forward(self, hidden, mask):
        for layer in self.layers:
            hidden = encoder_layer(layer, hidden, mask, None)[0]
        outputs = [hidden]
        if self.gate is not None or self.ramps is not None or self.model is not None:
            pooled = pool(self.pooling, hidden, token_weights(mask))
            if self.gate is not None:
                outputs.append(self.gate(pooled))
            if self.ramps is not None:
                outputs.append(self.ramps.head(self.ramp)(pooled))
            if self.model is not None:
                outputs.append(final_head(self.model)(pooled))
        return tuple(outputs)


class PassThroughGraph(paddle.nn.Layer):
    """``(hidden, mask) -> hidden``: nothing but the runtime's own work (feeding and fetching), the
    latency model's ``call`` probe (``adaptive.latency``).  The mask joins the output through the same
    two ops as in :class:`HeadGraph`, so the head's marginal cost does not count them."""

    def __init__(self):
        super().__init__()  # one weight: paddle 2.6's runtime refuses a graph without any
        self.one = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, hidden, mask):
        return hidden * self.one + 0.0 * paddle.sum(mask)


class HeadGraph(paddle.nn.Layer):
    """``(hidden, mask) -> logits``: pooling, the model's pooler and classifier (``encoder.final_head``), the
    shape of every decision a segment graph holds -- the latency model's ``head`` probe."""

    def __init__(self, model):
        super().__init__()
        self.model, self.pooling = model, pooling_of(model.bert)

    def forward(self, hidden, mask):
        logits = final_head(self.model)(pool(self.pooling, hidden, token_weights(mask)))
        return logits + 0.0 * paddle.sum(mask)  # CLS pooling reads no mask, and a graph may not ignore an input


def save_probes(load_fresh: Callable[[], Any], widths: list[float], directory: str,
                depths: Sequence[int] = ()) -> dict[str, tuple[str, int]]:
    """The latency model's probe graphs (``adaptive.latency``) under ``directory``; returns probe name ->
    (file prefix, encoder layers in it): ``call``, ``embeddings``, ``head``, and per width every encoder
    layer narrowed to it (``layer_h<heads>``, a :class:`SegmentGraph` of the whole stack, each width from a
    fresh model) and the first k of them for each shallower depth k in ``depths`` (``layer_h<heads>_l<k>``).
    Whole stacks, not one layer: at batch 1 a layer's time is mostly reading its weights, and one layer
    called again and again would read them from cache, as no real graph does; and stacks of each depth,
    because a shallower graph's weights may stay in a cache that the whole stack's overflow."""
    from ofa_flexbert.adaptive.latency import CALL, EMBEDDINGS, HEAD, layer_probe

    model = load_fresh()
    hidden_size = model.bert.config.hidden_size
    ids = [paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name) for name in INPUT_NAMES]
    spec = [paddle.static.InputSpec(shape=[None, None, hidden_size], dtype="float32", name="hidden"),
            paddle.static.InputSpec(shape=[None, 1, 1, None], dtype="float32", name="mask")]
    probes = {name: (os.path.join(directory, name), 0) for name in (CALL, EMBEDDINGS, HEAD)}
    for graph, name, inputs in ((PassThroughGraph(), CALL, spec), (EmbeddingGraph(model), EMBEDDINGS, ids),
                                (HeadGraph(model), HEAD, spec)):
        graph.eval()
        trace_and_save(graph, inputs, probes[name][0])
    for multiplier in sorted(set(widths)):
        model = model or load_fresh()
        width = config_width(model.bert.config, multiplier)
        layers = len(model.bert.encoder.layers)
        if layer_probe(width.heads) not in probes:
            for layer in model.bert.encoder.layers:
                narrow_layer(layer, width)
            shallower = sorted({int(k) for k in depths if 0 < int(k) < layers})
            for name, k in [(layer_probe(width.heads), layers)] + [(layer_probe(width.heads, k), k) for k in shallower]:
                graph = SegmentGraph(model, Segment(0, k, tuple(range(k))))
                graph.eval()
                probes[name] = (os.path.join(directory, name), k)
                trace_and_save(graph, spec, probes[name][0])
        model = None
    return probes


def save_segments(load_fresh: Callable[[], Any], segments: list[Segment], widths: list[float], gates, ramps,
                  export_dir: str) -> tuple[list[str], int]:
    """The embeddings' graph and one per (segment, width) under ``segments/``; returns their file prefixes
    (relative to ``export_dir``) and the parameters of the segment graphs.  ``gates`` / ``ramps``: the gate MLPs and off-ramps the
    graphs fold in (None when the setting has none).  Each width narrows a fresh model."""
    model = load_fresh()
    hidden_size = model.bert.config.hidden_size
    ids = [paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name) for name in INPUT_NAMES]
    embeddings = EmbeddingGraph(model, None if gates is None else gates.gates[0])
    embeddings.eval()  # (paddle 2.6's eval() returns None)
    written = [os.path.join(SEGMENTS, EMBEDDINGS_GRAPH)]
    trace_and_save(embeddings, ids, os.path.join(export_dir, written[0]))
    spec = [paddle.static.InputSpec(shape=[None, None, hidden_size], dtype="float32", name="hidden"),
            paddle.static.InputSpec(shape=[None, 1, 1, None], dtype="float32", name="mask")]
    parameters = 0
    for multiplier in widths:
        model = model or load_fresh()
        width = config_width(model.bert.config, multiplier)
        for index in sorted({i for segment in segments for i in segment.layers}):
            narrow_layer(model.bert.encoder.layers[index], width)
        for j, segment in enumerate(segments):
            gate = None if gates is None or segment.gate is None else gates.gates[segment.gate]
            graph = SegmentGraph(model, segment, gate, ramps)
            graph.eval()
            written.append(os.path.join(SEGMENTS, segment_graph_name(j, width)))
            trace_and_save(graph, spec, os.path.join(export_dir, written[-1]))
            parameters += sum(parameter_count(layer) for layer in graph.layers)
        model = None
    return written, parameters


def save_static(model, directory: str) -> str:
    """Trace ``model`` (batch and length free) and save it in this paddle's inference format; return the graph file.

    paddle >= 3 writes a PIR ``model.json`` (it cannot write a legacy ``.pdmodel`` for BERT,
    docs/reference.md, Export and Paddle Inference); paddle 2.6 writes ``model.pdmodel``, and its runtime cannot read a ``model.json``.
    """
    model.eval()
    spec = [paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name) for name in INPUT_NAMES]
    trace_and_save(StaticClassifier(model), spec, os.path.join(directory, MODEL_PREFIX))
    return graph_file(directory)


def save_layer_static(layer, hidden_size: int, prefix: str) -> None:
    """Trace one (narrowed) encoder layer with batch and length free and save it for Paddle Inference."""
    layer.eval()
    spec = [paddle.static.InputSpec(shape=[None, None, hidden_size], dtype="float32", name="hidden"),
            paddle.static.InputSpec(shape=[None, 1, 1, None], dtype="float32", name="mask")]
    trace_and_save(LayerGraph(layer), spec, prefix)


def trace_and_save(layer: paddle.nn.Layer, spec: list, prefix: str) -> None:
    """``paddle.jit.save`` of ``layer`` traced on ``spec``, the way each paddle needs it."""
    if int(paddle.__version__.split(".")[0]) >= 3:
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), prefix)
    else:  # 2.6: to_static ignores input_spec in its default mode; jit.save honours it
        paddle.jit.save(layer, prefix, input_spec=spec)


ONNX_OPSET = 13


def save_onnx(directory: str, prefix: str = MODEL_PREFIX) -> str:
    """Convert the exported Paddle graph ``<prefix>.*`` in ``directory`` to ``<prefix>.onnx`` (``model.onnx``)
    with paddle2onnx; return its path.

    paddle2onnx 2.x (paddle 3) runs ``pip install`` of optimisers during conversion unless told
    ``optimize_tool="None"``; 1.x (paddle 2.6) has no such option, and on a paddle 3 ``model.json``
    writes an empty file and reports success (docs/reference.md, Export and Paddle Inference), which is refused here.
    """
    import inspect

    try:
        import paddle2onnx
    except ImportError:
        raise UserError("--format onnx: paddle2onnx is not installed (pip install paddle2onnx; see README)") from None
    path = os.path.join(directory, onnx_file(prefix))
    options = {"save_file": path, "opset_version": ONNX_OPSET, "verbose": False, "enable_onnx_checker": True}
    if "optimize_tool" in inspect.signature(paddle2onnx.export).parameters:
        options["optimize_tool"] = "None"
    graph = graph_file(directory, prefix)
    paddle2onnx.export(graph, os.path.join(directory, prefix + ".pdiparams"), **options)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise UserError(f"--format onnx: paddle2onnx {getattr(paddle2onnx, '__version__', '?')} wrote no model for "
                        f"{os.path.basename(graph)} (it cannot read this paddle's format)")
    return path


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
