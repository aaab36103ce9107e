"""The list-mask ``BertModel.forward`` the OFA flow needs (installed by :func:`patches.apply`).

The PaddleSlim tutorial monkey-patches ``BertModel.forward`` so that the attention mask
can be the list ``[additive_mask, head_mask]``: the head mask multiplies each layer's
attention probabilities, and its gradient is the head importance.  The tutorial's version
(and ``paddleslim.nas.ofa.utils.nlp_utils``, which it needs) has three defects we avoid:

* it relies on ``nlp_utils`` patching ``paddle.nn.MultiHeadAttention`` globally, which drops
  the 1/sqrt(d_head) scaling (notes §5.1, B2) -- here attention is computed in this module
  and no paddle class is touched;
* its ``attention_mask=[None, None]`` default is a mutable list written into on every call;
* it drops hidden states, so distillation had to rely on forward hooks.

This forward also runs only chosen encoder layers (``layer_indices``), which elastic depth
builds on, and derives each layer's head count from the width its q projection actually
produced, so any head count works (OFA's ``num_heads * expand_ratio`` arithmetic does not
need to divide evenly).  With a tensor or ``None`` mask it equals the stock forward.
"""
from __future__ import annotations

from typing import Optional, Sequence

import paddle
import paddle.nn.functional as F
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPoolingAndCrossAttentions

MASK_VALUE = -1e4  # what stock BertModel adds at padding positions


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


def pool_input(bert, hidden: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
    """[B, H]: the vector the pooler reads -- [CLS] (``cls``) or the mean of the unpadded tokens (``mean``).

    Mean pooling is what sentence-transformers such as all-MiniLM-L6-v2 were trained with: their
    [CLS] carries almost nothing before the last layers, the token mean is informative at every
    layer (README, Decisions), which prefix depth and early exit need.
    """
    if pooling_of(bert) == "cls":
        return hidden[:, 0]
    total = paddle.matmul(weights.unsqueeze(1), hidden).squeeze(1)  # [B, 1, T] x [B, T, H]
    return total / weights.sum(axis=1, keepdim=True)


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
        shape = tuple(int(d) for d in scores.shape)
        if shape not in self._expanded:
            self._expanded[shape] = paddle.expand(self.mask, list(shape))
        return self._expanded[shape]


def attention(mha, x: paddle.Tensor, mask, head_mask, need_weights: bool):
    """Self-attention of ``paddle.nn.MultiHeadAttention`` ``mha`` with an optional head mask.

    Same operations, in the same order, as the stock forward; the head count is the
    q projection's output width over ``head_dim`` so a narrowed (OFA) layer just works.
    ``head_mask`` is a vector over the layer's full head count; its prefix is used.
    ``mask`` is a tensor, ``None`` or an :class:`ExpandedMask`.
    """
    q, k, v = mha.q_proj(x), mha.k_proj(x), mha.v_proj(x)
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
    return mha.out_proj(out), (weights if need_weights else None)


def dropout(module: paddle.nn.Dropout, x: paddle.Tensor) -> paddle.Tensor:
    """``module(x)`` in training; ``x`` itself otherwise, since paddle's dropout op copies its input
    even when it drops nothing (a 3 ms copy per [32, 128, 384] tensor on CPU, 20 per MiniLM forward)."""
    return module(x) if module.training and module.p else x


def encoder_layer(layer, x: paddle.Tensor, mask, head_mask, need_weights: bool = False):
    """One ``paddle.nn.TransformerEncoderLayer`` (post- or pre-norm) with a head mask."""
    residual = x
    if layer.normalize_before:
        x = layer.norm1(x)
    x, weights = attention(layer.self_attn, x, mask, head_mask, need_weights)
    x = residual + dropout(layer.dropout1, x)
    if not layer.normalize_before:
        x = layer.norm1(x)
    residual = x
    if layer.normalize_before:
        x = layer.norm2(x)
    x = layer.linear2(dropout(layer.dropout, layer.activation(layer.linear1(x))))
    x = residual + dropout(layer.dropout2, x)
    if not layer.normalize_before:
        x = layer.norm2(x)
    return x, weights


def list_mask_encoder_layer_forward(stock_forward):
    """A ``TransformerEncoderLayer.forward`` that takes ``[mask, head_mask]`` or the stock arguments."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        if isinstance(src_mask, (list, tuple)) and cache is None and not output_attentions:
            mask, head_mask = (list(src_mask) + [None, None])[:2]
            return encoder_layer(self, src, mask, head_mask)[0]
        return stock_forward(self, src, src_mask=src_mask, cache=cache, output_attentions=output_attentions)

    forward.__doc__ = list_mask_encoder_layer_forward.__doc__
    return forward


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
    **kwargs,
):
    """``BertModel.forward`` taking ``attention_mask`` as a tensor, ``None`` or ``[mask, head_mask]``.

    ``head_mask`` is ``[num_layers, num_heads]`` (row i for encoder layer i).
    ``layer_indices`` lists the encoder layers to run, in order (default: all).
    Returns ``(sequence_output, pooled_output[, hidden_states][, attentions])`` like the
    stock forward; ``hidden_states[0]`` is the embedding output and entry j the output of
    the j-th layer run.  Extra keyword arguments (e.g. ``depth`` from OFA) are ignored.
    The pooler reads [CLS], or the masked token mean when the model's config says
    ``pooling: mean`` (:func:`pool_input`).
    """
    if past_key_values is not None or use_cache:
        raise NotImplementedError("the patched BertModel.forward does not support caches")
    if isinstance(attention_mask, (list, tuple)):
        mask, head_mask = (list(attention_mask) + [None, None])[:2]  # a copy: callers share lists
    else:
        mask, head_mask = attention_mask, None
    mask = ExpandedMask(additive_mask(self, input_ids, mask))
    hidden = self.embeddings(input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids)
    all_hidden = [hidden] if output_hidden_states else None
    all_weights = [] if output_attentions else None
    layers = self.encoder.layers
    for i in range(len(layers)) if layer_indices is None else layer_indices:
        layer_head_mask = None if head_mask is None else head_mask[i]
        if output_attentions:  # a direct call: forward hooks on the layer do not fire
            hidden, weights = encoder_layer(layers[i], hidden, mask, layer_head_mask, True)
            all_weights.append(weights)
        else:  # through __call__, so forward hooks (DistillConfig) see the layer's output
            hidden = layers[i](hidden, [mask, layer_head_mask])
        if output_hidden_states:
            all_hidden.append(hidden)
    if self.encoder.norm is not None:
        hidden = self.encoder.norm(hidden)
    pooled = self.pooler(hidden if pooling_of(self) == "cls" else
                         pool_input(self, hidden, token_weights(mask.mask)).unsqueeze(1))  # pooler reads row 0
    if return_dict:
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden, pooler_output=pooled, hidden_states=all_hidden, attentions=all_weights
        )
    outputs = (hidden, pooled)
    if output_hidden_states:
        outputs += (all_hidden,)
    if output_attentions:
        outputs += (all_weights,)
    return outputs


def classifier_forward(stock_forward):
    """A ``BertForSequenceClassification.forward`` that can run only chosen encoder layers.

    Elastic depth needs this: the stock classifier has no way to pass ``layer_indices`` (or
    OFA's ``depth``) on to the encoder, which is why PaddleNLP's depth example patches it too.
    Without ``layer_indices`` the stock forward runs unchanged.  With it, the outputs are the
    stock tuple ``(logits[, hidden_states][, attentions])``; the loss from ``labels`` and
    ``return_dict`` are not supported on that path (compute the loss from the logits).
    """

    def forward(self, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, labels=None,
                output_hidden_states=None, output_attentions=None, return_dict=None,
                layer_indices: Optional[Sequence[int]] = None):
        if layer_indices is None:
            return stock_forward(self, input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                 attention_mask=attention_mask, labels=labels,
                                 output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                 return_dict=return_dict)
        if labels is not None or return_dict:
            raise NotImplementedError("layer_indices: labels and return_dict are not supported; "
                                      "compute the loss from the returned logits")
        outputs = self.bert(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                            output_attentions=output_attentions, layer_indices=layer_indices)
        logits = self.classifier(dropout(self.dropout, outputs[1]))
        output = (logits,) + tuple(outputs[2:])
        return output[0] if len(output) == 1 else output

    forward.__doc__ = classifier_forward.__doc__
    return forward
