"""The flexible BERT forward: one engine for every subnet, route, gate decision and exit.

Why one module owns it: the width and depth stages, head importance, distillation, gates,
early exit, inference and export all run BERT's encoder, and each would drift from the others
if it had a forward of its own.  Here every caller describes *what* runs -- for each batch row
the encoder layers in order, each at a :class:`routes.Width` -- and one loop (:func:`run_rows`)
runs it:

* at each step the rows are grouped by the (layer, width) they need next, and each group runs
  that layer once, so a batch mixes routes and every row gets what it would get alone;
* between layers an optional hook sees the rows still running (:class:`Between`): it may set
  their widths for the next layers (gates) and retire rows (early exit); a retired row leaves
  the batch, costs nothing more, and is classified by the head of its exit layer.

A width of ``None`` means "the layer as it is configured": a plain model runs at full width
and PaddleSlim's OFA supernet at the subnet its ``set_net_config`` chose, which is how the
training stages drive it (the PaddleSlim tutorial's flow).  An explicit :class:`routes.Width`
slices the first heads and FFN neurons of the weights directly -- the same ``F.linear`` on the
same slices as OFA's ``SuperLinear`` -- so it works on plain and converted models alike.

The PaddleSlim tutorial monkey-patches ``BertModel.forward`` so that the attention mask can
be the list ``[additive_mask, head_mask]`` (the head mask's gradient is the head importance).
:func:`patches.apply` installs :func:`bert_forward`, :func:`list_mask_encoder_layer_forward`
and :func:`classifier_forward` from this module on PaddleNLP's classes; the tutorial's own
version (and ``paddleslim.nas.ofa.utils.nlp_utils``) has three defects we avoid:

* it relies on ``nlp_utils`` patching ``paddle.nn.MultiHeadAttention`` globally, which drops
  the 1/sqrt(d_head) scaling (docs/reference.md, Unscaled attention in nlp_utils) -- here attention is
  computed in this module and no paddle class is touched;
* its ``attention_mask=[None, None]`` default is a mutable list written into on every call;
* it drops hidden states, so distillation had to rely on forward hooks.

Its length (about 500 lines) is deliberate: the routed loop, attention at a width and the three
installed forwards are one engine, and splitting them would put the patch targets
(``patches/__init__.py`` names this module) and the loop they share in different files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

import paddle
import paddle.nn.functional as F
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPoolingAndCrossAttentions

from .routes import Route, Width

MASK_VALUE = -1e4  # what stock BertModel adds at padding positions

# One step of a row's plan: (encoder layer, width); width None = the layer as configured.
Step = tuple[int, Optional[Width]]


# --- masks and pooling ---------------------------------------------------------------------------

def _weight_dtype(linear) -> paddle.dtype:
    """dtype of a Linear's weight, whether or not OFA wrapped it in a Block (``.fn``)."""
    return getattr(linear, "fn", linear).weight.dtype


def additive_mask(model, input_ids: paddle.Tensor, mask: Optional[paddle.Tensor]) -> paddle.Tensor:
    """The [B, 1, 1, T] additive attention mask, built exactly as stock BertModel builds it."""
    if mask is None:
        padding = (input_ids == model.pad_token_id).astype(_weight_dtype(model.pooler.dense))
        return paddle.unsqueeze(padding * MASK_VALUE, axis=[1, 2])
    if mask.ndim == 2:
        keep = mask.unsqueeze(axis=[1, 2]).astype(paddle.get_default_dtype())
        return (1.0 - keep) * MASK_VALUE
    return mask


def pooling_of(bert) -> str:
    """The model's pooling, recorded as ``pooling`` in its config.json (absent: ``cls``, stock BERT's)."""
    return getattr(bert.config, "pooling", None) or "cls"


def token_weights(additive: paddle.Tensor) -> paddle.Tensor:
    """[B, T]: 1 for the tokens an additive [B, 1, 1, T] mask attends to, 0 for padding."""
    return (additive[:, 0, 0, :] > MASK_VALUE / 2).astype(additive.dtype)


def pool(pooling: str, hidden: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
    """[B, H]: the vector the pooler reads -- [CLS] (``cls``) or the mean of the unpadded tokens (``mean``).

    Mean pooling is what sentence-transformers such as all-MiniLM-L6-v2 were trained with: their
    [CLS] carries almost nothing before the last layers, the token mean is informative at every
    layer (docs/decisions.md), which prefix depth and early exit need.
    """
    if pooling == "cls":
        return hidden[:, 0]
    total = paddle.matmul(weights.unsqueeze(1), hidden).squeeze(1)  # [B, 1, T] x [B, T, H]
    return total / weights.sum(axis=1, keepdim=True)


def pool_input(bert, hidden: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
    """:func:`pool` with ``bert``'s own pooling."""
    return pool(pooling_of(bert), hidden, weights)


class ExpandedMask:
    """An additive mask broadcast once per forward to the attention scores' full shape.

    Adding a [B, 1, 1, T] mask to [B, heads, T, T] scores takes paddle's generic broadcast
    kernel on CPU: 70 ms for MiniLM at batch 32 x 128, against 13 ms for tensors of equal shape
    plus 15 ms to expand once.  Every layer with the same head count shares the expansion.
    """

    def __init__(self, mask: paddle.Tensor):
        self.mask = mask
        self._expanded: dict[tuple[int, ...], paddle.Tensor] = {}

    def like(self, scores: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():  # tracing an export: the runtime's own fusions decide, and
            return self.mask              # paddle2onnx writes an Expand to free dims that onnxruntime rejects
        shape = tuple(int(d) for d in scores.shape)
        if shape not in self._expanded:
            self._expanded[shape] = paddle.expand(self.mask, list(shape))
        return self._expanded[shape]


# --- one layer ----------------------------------------------------------------------------------

def project(module, x: paddle.Tensor, out: Optional[int] = None, inp: Optional[int] = None) -> paddle.Tensor:
    """``module(x)``, or, when a width is forced, the linear map on the weight's first ``inp`` rows
    and ``out`` columns (Paddle's Linear weight is [in, out]) -- what OFA's ``SuperLinear`` computes
    at that width, on a plain ``Linear`` as well as on a converted one (``Block.fn``)."""
    if out is None and inp is None:
        return module(x)
    linear = getattr(module, "fn", module)
    weight, bias = linear.weight, linear.bias
    rows = int(weight.shape[0]) if inp is None else inp
    cols = int(weight.shape[1]) if out is None else out
    if (rows, cols) != (int(weight.shape[0]), int(weight.shape[1])):
        weight = weight[:rows, :cols]
    if bias is not None and cols != int(bias.shape[0]):
        bias = bias[:cols]
    return F.linear(x, weight, bias)


def attention(mha, x: paddle.Tensor, mask, head_mask, need_weights: bool, width: Optional[Width] = None):
    """Self-attention of ``paddle.nn.MultiHeadAttention`` ``mha`` with an optional head mask.

    Same operations, in the same order, as the stock forward; the head count is the
    q projection's output width over ``head_dim`` so a narrowed (OFA) layer just works.
    ``head_mask`` is a vector over the layer's full head count; its prefix is used.
    ``mask`` is a tensor, ``None`` or an :class:`ExpandedMask`.  ``width`` forces the first
    ``width.heads`` heads (None: as the layer is configured).
    """
    attention_dim = None if width is None else width.attention_dim
    q = project(mha.q_proj, x, attention_dim)
    k, v = project(mha.k_proj, x, attention_dim), project(mha.v_proj, x, attention_dim)
    heads = int(q.shape[-1]) // mha.head_dim

    def split(t):
        return paddle.transpose(paddle.reshape(t, [0, 0, heads, mha.head_dim]), perm=[0, 2, 1, 3])

    # scaled before the split: the same products as the stock forward's, on a contiguous tensor
    q, k, v = split(q * (mha.head_dim**-0.5)), split(k), split(v)
    product = paddle.matmul(x=q, y=k, transpose_y=True)
    if mask is not None:
        product = product + (mask.like(product) if isinstance(mask, ExpandedMask) else mask)
    weights = F.softmax(product)
    if mha.dropout and mha.training:
        weights = F.dropout(weights, mha.dropout, training=True, mode="upscale_in_train")
    if head_mask is not None:
        weights = weights * paddle.reshape(head_mask[:heads], [1, heads, 1, 1])
    out = paddle.matmul(weights, v)
    out = paddle.transpose(out, perm=[0, 2, 1, 3])
    out = paddle.reshape(out, [0, 0, heads * mha.head_dim])
    return project(mha.out_proj, out, inp=attention_dim), (weights if need_weights else None)


def dropout(module: paddle.nn.Dropout, x: paddle.Tensor) -> paddle.Tensor:
    """``module(x)`` in training; ``x`` itself otherwise, since paddle's dropout op copies its input
    even when it drops nothing (a 3 ms copy per [32, 128, 384] tensor on CPU, 20 per MiniLM forward)."""
    return module(x) if module.training and module.p else x


def encoder_layer(layer, x: paddle.Tensor, mask, head_mask, need_weights: bool = False,
                  width: Optional[Width] = None):
    """One ``paddle.nn.TransformerEncoderLayer`` (post- or pre-norm) with a head mask, at ``width``."""
    residual = x
    if layer.normalize_before:
        x = layer.norm1(x)
    x, weights = attention(layer.self_attn, x, mask, head_mask, need_weights, width)
    x = residual + dropout(layer.dropout1, x)
    if not layer.normalize_before:
        x = layer.norm1(x)
    residual = x
    if layer.normalize_before:
        x = layer.norm2(x)
    ffn = None if width is None else width.ffn
    x = project(layer.linear2, dropout(layer.dropout, layer.activation(project(layer.linear1, x, ffn))), inp=ffn)
    x = residual + dropout(layer.dropout2, x)
    if not layer.normalize_before:
        x = layer.norm2(x)
    return x, weights


def list_mask_encoder_layer_forward(stock_forward):
    """A ``TransformerEncoderLayer.forward`` that takes ``[mask, head_mask(, width)]`` or the stock arguments."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        if isinstance(src_mask, (list, tuple)) and cache is None and not output_attentions:
            mask, head_mask, width = (list(src_mask) + [None, None, None])[:3]
            return encoder_layer(self, src, mask, head_mask, width=width)[0]
        return stock_forward(self, src, src_mask=src_mask, cache=cache, output_attentions=output_attentions)

    forward.__doc__ = list_mask_encoder_layer_forward.__doc__
    return forward


# --- the routed loop ------------------------------------------------------------------------------

def _take(tensor: paddle.Tensor, positions: Sequence[int]) -> paddle.Tensor:
    """Rows ``positions`` of ``tensor`` (the tensor itself when that is all of them, in order)."""
    if list(positions) == list(range(int(tensor.shape[0]))):
        return tensor
    return paddle.gather(tensor, paddle.to_tensor(list(positions), dtype="int64"), axis=0)


@dataclass
class Between:
    """What a between-layers hook sees after ``step`` layers, and the decisions it may take.

    ``rows`` are the original batch indices of the rows still running, in the order of
    ``hidden`` [n, T, H] and ``weights`` [n, T] (1 on real tokens).  A gate calls
    :meth:`set_widths`; an early-exit check calls :meth:`exit`.  The hook runs before every
    step at which some row still has a layer to run, including step 0 (after the embeddings).
    """

    step: int
    rows: list[int]
    hidden: paddle.Tensor
    weights: paddle.Tensor
    pooling: str
    plans: list[list[Step]]  # per original row, the whole plan; the engine reads it at each step
    leaving: set = field(default_factory=set)

    def pooled(self) -> paddle.Tensor:
        """[n, H]: the vector the model's pooler would read here (its own pooling)."""
        return pool(self.pooling, self.hidden, self.weights)

    def set_widths(self, widths: Sequence[Width], layers: int) -> None:
        """Row ``rows[p]`` runs its next ``layers`` layers (fewer if its route ends) at ``widths[p]``."""
        if len(widths) != len(self.rows):
            raise ValueError(f"set_widths needs one width per running row: {len(self.rows)}, got {len(widths)}")
        for row, width in zip(self.rows, widths):
            plan = self.plans[row]
            for j in range(self.step, min(self.step + layers, len(plan))):
                plan[j] = (plan[j][0], width)

    def exit(self, leave: Sequence[bool]) -> None:
        """Rows ``rows[p]`` with ``leave[p]`` stop here and are classified by this layer's head."""
        if len(leave) != len(self.rows):
            raise ValueError(f"exit needs one decision per running row: {len(self.rows)}, got {len(leave)}")
        if self.step == 0 and any(leave):
            raise ValueError("an input cannot exit before its first layer")
        self.leaving.update(row for row, go in zip(self.rows, leave) if go)


@dataclass
class Finished:
    """Rows that stopped after ``step`` layers, with their hidden states and additive mask."""

    step: int
    rows: list[int]
    hidden: paddle.Tensor
    additive: paddle.Tensor


Hook = Callable[[Between], None]


def run_shared(bert, hidden: paddle.Tensor, additive: paddle.Tensor, plan: Sequence[Step],
               head_mask: Optional[paddle.Tensor] = None, states: Optional[list] = None,
               attentions: Optional[list] = None) -> paddle.Tensor:
    """Run every row of ``hidden`` [B, T, H] through the same ``plan``; return the last hidden state.

    The one-plan case of :func:`run_rows`, without its per-row bookkeeping: nothing here depends
    on the batch size, so a static graph (export) traces it with the batch and length left free.
    ``states`` / ``attentions`` collect each step's hidden state / attention weights.  Layers
    run through ``__call__`` so forward hooks (PaddleSlim's DistillConfig) see their outputs,
    except when attention weights are requested (a direct call).
    """
    mask = ExpandedMask(additive)
    for index, width in plan:
        layer = bert.encoder.layers[index]
        layer_head_mask = None if head_mask is None else head_mask[index]
        if attentions is not None:
            hidden, weights = encoder_layer(layer, hidden, mask, layer_head_mask, True, width)
            attentions.append(weights)
        else:
            hidden = layer(hidden, [mask, layer_head_mask, width])
        if states is not None:
            states.append(hidden)
    return hidden


def run_rows(bert, hidden: paddle.Tensor, additive: paddle.Tensor, plans: list[list[Step]],
             hook: Optional[Hook] = None) -> list[Finished]:
    """Run each row ``r`` of ``hidden`` [B, T, H] through ``plans[r]``; return the rows as they finish.

    At each step the running rows are grouped by the (layer, width) they need and each group
    runs once, so a row's result does not depend on its batch mates.  A row finishes when its
    plan ends or ``hook`` retires it.  ``plans`` may be edited by the hook (gates).  Without a
    hook, rows that share one plan run as :func:`run_shared` runs them.
    """
    rows, finished, step = list(range(int(hidden.shape[0]))), [], 0
    if hook is None and all(plan == plans[0] for plan in plans):
        return [Finished(len(plans[0]), rows, run_shared(bert, hidden, additive, plans[0]), additive)]
    pooling, masks = pooling_of(bert), {}
    while rows:
        leaving: set = set()
        if hook is not None and any(len(plans[r]) > step for r in rows):
            between = Between(step, rows, hidden, token_weights(additive), pooling, plans)
            hook(between)
            leaving = between.leaving
        done = [p for p, r in enumerate(rows) if r in leaving or len(plans[r]) <= step]
        if done:
            finished.append(Finished(step, [rows[p] for p in done], _take(hidden, done), _take(additive, done)))
            kept = [p for p in range(len(rows)) if p not in set(done)]
            if not kept:
                break
            rows, hidden, additive = [rows[p] for p in kept], _take(hidden, kept), _take(additive, kept)
        groups: dict[Step, list[int]] = {}
        for p, r in enumerate(rows):
            groups.setdefault(plans[r][step], []).append(p)
        outputs, order = [], []
        for (index, width), positions in groups.items():
            members = tuple(rows[p] for p in positions)
            if members not in masks:
                masks[members] = ExpandedMask(_take(additive, positions))
            layer = bert.encoder.layers[index]
            outputs.append(layer(_take(hidden, positions), [masks[members], None, width]))
            order.extend(positions)
        hidden = outputs[0] if len(outputs) == 1 else paddle.concat(outputs, axis=0)
        additive, rows = _take(additive, order), [rows[p] for p in order]
        step += 1
    return finished


def plan_of(route: Route) -> list[Step]:
    """The steps a route runs, up to its exit."""
    return [(layer, width) for layer, width in route.executed]


# --- the patched BertModel and classifier forwards ------------------------------------------------

def bert_forward(
    self,
    input_ids: paddle.Tensor,
    token_type_ids: Optional[paddle.Tensor] = None,
    position_ids: Optional[paddle.Tensor] = None,
    attention_mask=None,
    past_key_values=None,
    use_cache: Optional[bool] = None,
    output_hidden_states: Optional[bool] = None,
    output_attentions: Optional[bool] = None,
    return_dict: Optional[bool] = None,
    layer_indices: Optional[Sequence[int]] = None,
    route: Optional[Route] = None,
    **kwargs,
):
    """``BertModel.forward`` taking ``attention_mask`` as a tensor, ``None`` or ``[mask, head_mask]``.

    ``head_mask`` is ``[num_layers, num_heads]`` (row i for encoder layer i).
    ``layer_indices`` lists the encoder layers to run, in order (default: all), each as the layer
    is configured; ``route`` instead runs a :class:`routes.Route` (its layers, each at its own
    width, up to its exit) for every row.  Returns ``(sequence_output, pooled_output[,
    hidden_states][, attentions])`` like the stock forward; ``hidden_states[0]`` is the embedding
    output and entry j the output of the j-th layer run.  Extra keyword arguments (e.g.
    ``depth`` from OFA) are ignored.  The pooler reads [CLS], or the masked token mean when the
    model's config says ``pooling: mean`` (:func:`pool_input`).
    """
    if past_key_values is not None or use_cache:
        raise NotImplementedError("the patched BertModel.forward does not support caches")
    if route is not None and layer_indices is not None:
        raise ValueError("give layer_indices or route, not both")
    if isinstance(attention_mask, (list, tuple)):
        mask, head_mask = (list(attention_mask) + [None, None])[:2]  # a copy: callers share lists
    else:
        mask, head_mask = attention_mask, None
    additive = additive_mask(self, input_ids, mask)
    hidden = self.embeddings(input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids)
    if route is not None:
        plan = plan_of(route)
    else:
        plan = [(i, None) for i in (range(len(self.encoder.layers)) if layer_indices is None else layer_indices)]
    states = [hidden] if output_hidden_states else None
    attentions = [] if output_attentions else None
    hidden = run_shared(self, hidden, additive, plan, head_mask=head_mask, states=states, attentions=attentions)
    if self.encoder.norm is not None:
        hidden = self.encoder.norm(hidden)
    pooled = self.pooler(hidden if pooling_of(self) == "cls" else
                         pool_input(self, hidden, token_weights(additive)).unsqueeze(1))  # pooler reads row 0
    if return_dict:
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden, pooler_output=pooled, hidden_states=states, attentions=attentions
        )
    outputs = (hidden, pooled)
    if output_hidden_states:
        outputs += (states,)
    if output_attentions:
        outputs += (attentions,)
    return outputs


def classifier_forward(stock_forward):
    """A ``BertForSequenceClassification.forward`` that can run chosen encoder layers or a route.

    Elastic depth needs this: the stock classifier has no way to pass ``layer_indices`` (or
    OFA's ``depth``) on to the encoder, which is why PaddleNLP's depth example patches it too.
    Without ``layer_indices`` and ``route`` the stock forward runs.  With one, the outputs are
    the stock tuple ``(logits[, hidden_states][, attentions])``; the loss from ``labels`` and
    ``return_dict`` are not supported on that path (compute the loss from the logits).
    """

    def forward(self, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, labels=None,
                output_hidden_states=None, output_attentions=None, return_dict=None,
                layer_indices: Optional[Sequence[int]] = None, route: Optional[Route] = None):
        if layer_indices is None and route is None:
            return stock_forward(self, input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                 attention_mask=attention_mask, labels=labels,
                                 output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                 return_dict=return_dict)
        if labels is not None or return_dict:
            raise NotImplementedError("layer_indices / route: labels and return_dict are not supported; "
                                      "compute the loss from the returned logits")
        outputs = self.bert(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                            output_attentions=output_attentions, layer_indices=layer_indices, route=route)
        logits = self.classifier(dropout(self.dropout, outputs[1]))
        output = (logits,) + tuple(outputs[2:])
        return output[0] if len(output) == 1 else output

    forward.__doc__ = classifier_forward.__doc__
    return forward


# --- per-row routes with exits: the adaptive entry point ------------------------------------------

@dataclass
class RoutedOutput:
    """Logits [B, C] of a routed forward and the route each row actually took (widths a hook set,
    ``exit_after`` where it left early), for per-input accounting (:func:`accounting.route_macs`)."""

    logits: paddle.Tensor
    routes: list[Route]


# A head maps the pooled vector [n, H] (the model's pooling, at the exit layer) to logits [n, C].
Head = Callable[[paddle.Tensor], paddle.Tensor]


def final_head(model) -> Head:
    """The classifier's own pooler + classifier, as the stock forward applies them."""
    return lambda pooled: model.classifier(dropout(model.dropout, model.bert.pooler(pooled.unsqueeze(1))))


def classify(model, input_ids: paddle.Tensor, token_type_ids: Optional[paddle.Tensor] = None,
             routes: Union[Route, Sequence[Route]] = None, hook: Optional[Hook] = None,
             exit_heads: Optional[Mapping[int, Head]] = None,
             attention_mask: Optional[paddle.Tensor] = None) -> RoutedOutput:
    """Classify a batch whose rows may take different routes, with optional gates and exits (``hook``).

    ``routes`` is one :class:`routes.Route` for every row or one per row (default: the full
    model at full width).  A row that stops after j layers -- its route's exit or a hook's
    decision -- is classified by ``exit_heads[j]`` when given, else by the model's own pooler
    and classifier.  Each row's logits equal what it gets in a batch of its own (to float noise).
    """
    bert = model.bert
    batch = int(input_ids.shape[0])
    if routes is None:
        routes = Route.uniform(bert.config)
    per_row = [routes] * batch if isinstance(routes, Route) else list(routes)
    if len(per_row) != batch:
        raise ValueError(f"classify needs one route per row: {batch} rows, {len(per_row)} routes")
    plans = [plan_of(route) for route in per_row]
    additive = additive_mask(bert, input_ids, attention_mask)
    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    pieces, order, taken = [], [], [None] * batch
    for done in run_rows(bert, hidden, additive, plans, hook=hook):
        states = done.hidden if bert.encoder.norm is None else bert.encoder.norm(done.hidden)
        head = (exit_heads or {}).get(done.step) or final_head(model)
        pieces.append(head(pool(pooling_of(bert), states, token_weights(done.additive))))
        order.extend(done.rows)
        for row in done.rows:
            plan, full = plans[row], len(per_row[row].layers)
            layers = per_row[row].layers
            widths = tuple(w for _, w in plan[:done.step]) + per_row[row].widths[done.step:]
            taken[row] = Route(layers, widths, None if done.step == full else done.step)
    logits = pieces[0] if len(pieces) == 1 else paddle.concat(pieces, axis=0)
    inverse = sorted(range(batch), key=lambda p: order[p])
    return RoutedOutput(_take(logits, inverse), taken)
