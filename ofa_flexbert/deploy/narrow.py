"""Turn one route of a flexible model into a genuinely smaller model: the first heads and neurons kept.

Why by hand and not PaddleSlim's ``OFA.export``: that slices tensors in place on the model it
is given (so a second subnet exported from the same model is cut from the first -- the
compounding PaddleNLP's ``Trainer.compress`` suffers), leaves ``num_heads`` and the layer list
to the caller, and knows nothing of our depth rules or mean pooling (docs/design.md, "Export").
Here a freshly loaded model is narrowed to a :class:`routes.Route`: each kept layer's q/k/v/out
and FFN Linears are replaced by Linears holding the route's first heads and neurons (the ones
importance reordering put first), and the other layers are dropped.
"""
from __future__ import annotations

from typing import Optional

import paddle

from ofa_flexbert.engine.routes import Route, Width

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


def parameter_count(model) -> int:
    """Parameters the exported model holds (every tensor of its state dict)."""
    total = 0
    for value in model.state_dict().values():
        count = 1
        for d in value.shape:
            count *= int(d)
        total += count
    return total
