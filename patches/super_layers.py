"""Replacements for PaddleSlim 2.6.0 Super layers (installed by :func:`patches.apply`)."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F


def super_layernorm_forward(self, input):
    """LayerNorm over the input's actual width, using the prefix of weight and bias.

    The stock forward unpacks three outputs from ``_C_ops.layer_norm`` (one since paddle
    2.5), so it raises at batch 2 or 4 and returns a wrongly shaped tensor at batch 3.
    The public functional op gives the same result on every paddle version.
    """
    width = int(input.shape[-1])
    self.cur_config = {"prune_dim": width}
    weight = None if self.weight is None else self.weight[:width]
    bias = None if self.bias is None else self.bias[:width]
    return F.layer_norm(input, [width], weight=weight, bias=bias, epsilon=self._epsilon)


def super_embedding_init(
    self,
    num_embeddings,
    embedding_dim,
    candidate_config={},  # noqa: B006 -- same signature as the original; never mutated
    padding_idx=None,
    sparse=False,
    weight_attr=None,
    name=None,
):
    """``SuperEmbedding.__init__`` with keyword calls (paddle 3.2 made them keyword-only).

    Sets exactly the attributes the original sets.
    """
    paddle.nn.Embedding.__init__(
        self,
        num_embeddings,
        embedding_dim,
        padding_idx=padding_idx,
        sparse=sparse,
        weight_attr=weight_attr,
        name=name,
    )
    self.candidate_config = candidate_config
    self.cur_config = None
    self.expand_ratio = candidate_config.get("expand_ratio")
    self.base_output_dim = self._embedding_dim
    if self.expand_ratio is not None:
        self.base_output_dim = int(self._embedding_dim / max(self.expand_ratio))


def super_layernorm_init(self, normalized_shape, epsilon=1e-05, weight_attr=None, bias_attr=None, name=None):
    """``SuperLayerNorm.__init__`` with keyword calls (paddle 3.3 made them keyword-only)."""
    paddle.nn.LayerNorm.__init__(
        self, normalized_shape, epsilon, weight_attr=weight_attr, bias_attr=bias_attr, name=name
    )
    self.cur_config = None
