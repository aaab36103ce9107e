"""Widths, depths and routes: the pure rules every subnet, gate decision and exit obeys.

Why a module of its own, importing neither paddle nor paddleslim: these rules are arithmetic
that accounting, search, export manifests and tests share, and each fact must live in one
place -- how a width multiplier becomes heads and FFN neurons (:func:`width_for`), how a depth
multiplier becomes layers (:func:`depth_for`, :func:`depth_layers`), what a grid point is
(:class:`Subnet`) and what one input runs (:class:`Route`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

# Which encoder layers a depth-d subnet runs (depth_layers):
#   prefix       Flexible-BERT: the first round(L·d) -- "run the first layers and stop", what early exit needs;
#   every_other  PaddleNLP's variant of DynaBERT's rule: layer floor((i+1)/d) - 1 (1, 3, 5 of 6 at d = 0.5);
#   dynabert     DynaBERT's own code: layer floor(i/d) (0, 2, 4 of 6 at d = 0.5).
DEPTH_RULES = ("prefix", "every_other", "dynabert")
# What the pooler (then the classifier) reads: [CLS] (stock BERT, the reference) or the mean of the
# unpadded tokens' last executed hidden states (how sentence-transformers are trained).
POOLINGS = ("cls", "mean")


def exact_multiplier(value: float) -> Fraction:
    """A width/depth multiplier as the decimal the user typed (0.6 is 3/5, not 0.59999...).

    Layer counts and teacher-layer floors computed on it are exact: 12 x 0.55 = 6.6 and
    3 / 0.6 = 5, where float arithmetic can land on the wrong side of an integer.
    """
    return Fraction(repr(float(value)))


@dataclass(frozen=True)
class Width:
    """How much of one encoder layer runs: heads of ``head_dim`` each and FFN neurons."""

    heads: int
    head_dim: int
    ffn: int

    @property
    def attention_dim(self) -> int:
        return self.heads * self.head_dim


def width_for(width_mult: float, num_heads: int, head_dim: int, ffn_size: int) -> Width:
    """Heads = round(A·w) (half to even, at least 1); FFN neurons = heads·F // A (at least 1).

    This is the reference's rule (docs/reference.md, Width rule): w = 0.55 and 0.6 keep 7 of 12
    heads, 0.65 keeps 8.  Any head count from 1 to A is reachable.  The FFN share is computed
    in integers: the reference's ``int(heads / A * F)`` gives 879 for 11 of 15 heads and
    F = 1200, where the exact share is 880.
    """
    heads = max(1, round(num_heads * exact_multiplier(width_mult)))
    return heads_width(heads, num_heads, head_dim, ffn_size)


def heads_width(heads: int, num_heads: int, head_dim: int, ffn_size: int) -> Width:
    """The :class:`Width` that keeps ``heads`` of ``num_heads`` heads (FFN in proportion, at least 1)."""
    if not 1 <= heads <= num_heads:
        raise ValueError(f"heads must be in 1..{num_heads}, got {heads}")
    return Width(heads, head_dim, max(1, heads * ffn_size // num_heads))


def config_width(config, width_mult: float) -> Width:
    """:func:`width_for` with the sizes of a BertConfig (hidden_size, num_attention_heads, intermediate_size)."""
    heads = config.num_attention_heads
    return width_for(width_mult, heads, config.hidden_size // heads, config.intermediate_size)


def depth_for(num_layers: int, depth_mult: float) -> int:
    """Layers a depth multiplier keeps: round(L·d), half to even (at least 1).

    The reference's rule (docs/reference.md, Depth rule): 12 layers at 0.5/0.75/1.0 keep 6/9/12;
    all-MiniLM-L6-v2's 6 layers keep 3/4/6 (4.5 rounds to even, as Python's round and
    :func:`width_for` do).  Computed on the exact decimal, so 12 x 0.55 = 6.6 keeps 7.
    """
    return max(1, round(num_layers * exact_multiplier(depth_mult)))


def depth_layers(num_layers: int, depth_mult: float, rule: str = "prefix") -> list[int]:
    """The encoder layers (0-based, in order) a depth-d subnet runs; see :data:`DEPTH_RULES`."""
    count = depth_for(num_layers, depth_mult)
    d = exact_multiplier(depth_mult)
    if rule == "prefix":
        return list(range(count))
    if rule == "every_other":
        return [min(num_layers - 1, math.floor((i + 1) / d) - 1) for i in range(count)]
    if rule == "dynabert":
        return [min(num_layers - 1, math.floor(i / d)) for i in range(count)]
    raise ValueError(unknown_rule(rule))


def unknown_rule(rule: str) -> str:
    return f"unknown depth rule {rule!r}; expected one of {DEPTH_RULES}"


def subnet_tag(width_mult: float, depth_mult: float) -> str:
    """``w<w>_d<d>`` (e.g. ``w0.25_d0.5``): how VisualDL tags name a subnet, in every stage."""
    return f"w{width_mult:g}_d{depth_mult:g}"


@dataclass(frozen=True)
class Subnet:
    """A point of the width x depth grid."""

    width_mult: float = 1.0
    depth_mult: float = 1.0

    @property
    def tag(self) -> str:
        """``w<w>_d<d>``: the subnet's name in VisualDL tags."""
        return subnet_tag(self.width_mult, self.depth_mult)


@dataclass(frozen=True)
class Route:
    """What one input runs: encoder layers in order, each with its width, and where it leaves.

    ``exit_after`` counts layers run (1 = after the first entry of ``layers``); None runs them
    all.  A uniform (width, depth) subnet is the route :meth:`uniform` builds; gates give each
    block of layers its own width, and early exit cuts a route short.
    """

    layers: tuple[int, ...]
    widths: tuple[Width, ...]  # one per entry of ``layers``
    exit_after: Optional[int] = None

    def __post_init__(self):
        if len(self.layers) != len(self.widths):
            raise ValueError(f"a route needs one width per layer: {len(self.layers)} layers, "
                             f"{len(self.widths)} widths")
        if not self.layers:
            raise ValueError("a route runs at least one layer")
        if self.exit_after is not None and not 1 <= self.exit_after <= len(self.layers):
            raise ValueError(f"exit_after must be in 1..{len(self.layers)}, got {self.exit_after}")

    @classmethod
    def uniform(cls, config, width_mult: float = 1.0, depth_mult: float = 1.0, rule: str = "prefix") -> "Route":
        """The route of the (width_mult, depth_mult) subnet of a model with BertConfig ``config``."""
        layers = depth_layers(config.num_hidden_layers, depth_mult, rule)
        return cls(tuple(layers), (config_width(config, width_mult),) * len(layers))

    @property
    def executed(self) -> Sequence[tuple[int, Width]]:
        """(layer, width) of every layer the input actually runs, up to its exit."""
        run = len(self.layers) if self.exit_after is None else self.exit_after
        return tuple(zip(self.layers[:run], self.widths[:run]))
