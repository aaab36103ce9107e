"""Analytic cost of a subnet: multiply-accumulates (MACs) per example.

Why analytic: the reference measured FLOPs with a profiler on a second, misaligned forward
pass (docs/reference.md, Cost counting), so its numbers did not belong to the evaluated
predictions.  Here the count is a closed form of the subnet's shape and each example's real
token count T (no padding: padding depends on how examples happen to be batched):

* per encoder layer with k heads of size d_h and f FFN neurons (hidden size H):
  q, k, v and attention-out projections ``4·T·H·k·d_h``; attention scores QKᵀ and the
  weighted sum AV ``2·k·T²·d_h`` (the reference left these out, ~3% of BERT-base at T=128);
  the FFN ``2·T·H·f``;
* the pooler ``H·H`` and the classifier ``H·C``, on the pooled vector only; mean pooling
  (``pooling: mean`` in the model's config) adds the masked mean over the tokens, ``T·H``.

Embedding look-ups, LayerNorm, GELU, softmax and biases are not multiply-accumulates and are
not counted.  Any :class:`routes.Route` is counted layer by layer at its own widths, up to its
exit (:func:`route_macs`); a uniform subnet is one route.  Widths and depths go through
:func:`routes.width_for` and :func:`routes.depth_for`, the single owners of those rules.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from .routes import Route


def layer_macs(hidden: int, heads: int, head_dim: int, ffn: int, length: int) -> dict[str, int]:
    """One encoder layer on one example of ``length`` tokens: {"linear", "attention"} MACs."""
    attention_dim = heads * head_dim
    linear = 4 * length * hidden * attention_dim + 2 * length * hidden * ffn
    return {"linear": linear, "attention": 2 * heads * length * length * head_dim}


def route_macs(config, route: Route, length: int) -> int:
    """MACs of one ``length``-token example that runs ``route``: each executed layer at its own width,
    then the pooling, pooler and classifier at its exit.

    ``config`` is the model's BertConfig (hidden_size, num_labels, and ``pooling`` when it is not cls).
    """
    hidden = config.hidden_size
    encoder = 0
    for _, width in route.executed:
        per_layer = layer_macs(hidden, width.heads, width.head_dim, width.ffn, length)
        encoder += per_layer["linear"] + per_layer["attention"]
    pooling = length * hidden if getattr(config, "pooling", None) == "mean" else 0
    return encoder + pooling + hidden * hidden + hidden * config.num_labels


def subnet_macs(config, width_mult: float, depth_mult: float, length: int) -> int:
    """MACs of the (width_mult, depth_mult) subnet of a BERT classifier on one ``length``-token example.

    ``config`` is the model's BertConfig (hidden_size, num_attention_heads, num_hidden_layers,
    intermediate_size, num_labels, and ``pooling`` when it is not cls).  Depth counts layers,
    whichever rule picks them, so the prefix route stands for every rule's.
    """
    return route_macs(config, Route.uniform(config, width_mult, depth_mult), length)


def mean_macs(config, width_mult: float, depth_mult: float, lengths: Sequence[int]) -> float:
    """Average :func:`subnet_macs` over examples of the given token counts."""
    if not lengths:
        raise ValueError("mean_macs needs at least one sequence length")
    return sum(subnet_macs(config, width_mult, depth_mult, t) for t in lengths) / len(lengths)


def sequence_lengths(loader) -> list[int]:
    """Token count of every example of a loader built by ``data.make_loader`` (before padding)."""
    return [len(row["input_ids"]) for row in loader.dataset]


def lengths_of(loaders: Iterable) -> list[int]:
    """Token counts of the first loader (for MNLI: matched), the set costs are reported on."""
    for loader in loaders:
        return sequence_lengths(loader)
    return []
