"""An independent float64 numpy forward pass of a HuggingFace BERT checkpoint.

Why it exists: the converter in ``ofa_flexbert.models`` renames and transposes
every tensor.  Comparing the converted Paddle model with Paddle itself would only
prove self-consistency; comparing it with this reference, which reads the
*HuggingFace* names in the *PyTorch* layout (``Linear.weight`` is ``[out, in]``)
and shares no code with Paddle, proves the mapping right.  It follows HF's
``BertModel`` (post-norm layers, exact erf GELU, tanh pooler over the first
token) except for the attention mask, which is built the way paddlenlp 2.8.1's
``BertModel`` builds it when no mask is passed: ``(input_ids == pad_token_id) *
-1e4`` added to the attention scores.

Float64 throughout so that the reference's own rounding error is negligible
next to the 1e-5 tolerance the tests use for Paddle's float32.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Tuple

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, HF's ``"gelu"``; numpy has no erf, hence math.erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, like torch/paddle
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x: np.ndarray, w: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """torch ``nn.Linear``: weight is ``[out, in]``, so ``x @ W.T + b``."""
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _activation(name: str):
    if name == "gelu":
        return gelu
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    raise ValueError(f"numpy_bert: unsupported hidden_act {name!r}")


def bert_forward(
    weights: Mapping[str, np.ndarray],
    config: Mapping,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    prefix: str = "bert.",
) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(sequence_output [B, T, H], pooled_output [B, H])``.

    ``weights`` holds HF names (``prefix`` + ``embeddings.word_embeddings.weight``
    ...); ``prefix`` is ``"bert."`` for task checkpoints and ``""`` for bare
    ``BertModel`` ones such as sentence-transformers'.
    """
    w: Dict[str, np.ndarray] = {
        k[len(prefix):]: np.asarray(v, dtype=np.float64) for k, v in weights.items() if k.startswith(prefix)
    }
    eps = float(config.get("layer_norm_eps", 1e-12))
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim", hidden // heads))  # set when heads were sliced off (a subnet)
    act = _activation(config.get("hidden_act", "gelu"))
    pad_id = int(config.get("pad_token_id", 0))

    input_ids = np.asarray(input_ids)
    token_type_ids = np.asarray(token_type_ids)
    batch, seq_len = input_ids.shape
    positions = np.arange(seq_len)

    x = (
        w["embeddings.word_embeddings.weight"][input_ids]
        + w["embeddings.position_embeddings.weight"][positions][None, :, :]
        + w["embeddings.token_type_embeddings.weight"][token_type_ids]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    # paddlenlp: mask = (input_ids == pad_token_id) * -1e4, broadcast over heads and queries.
    mask = (input_ids == pad_id).astype(np.float64) * -1e4  # [B, T]
    mask = mask[:, None, None, :]  # [B, 1, 1, T]

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        heads = w[p + "attention.self.query.weight"].shape[0] // head_dim  # per layer: a route's may differ

        def split(t: np.ndarray) -> np.ndarray:  # [B, T, H] -> [B, heads, T, head_dim]
            return t.reshape(batch, seq_len, heads, head_dim).transpose(0, 2, 1, 3)

        q = split(linear(x, w, p + "attention.self.query"))
        k = split(linear(x, w, p + "attention.self.key"))
        v = split(linear(x, w, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + mask
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq_len, heads * head_dim)
        attn_out = linear(ctx, w, p + "attention.output.dense")
        x = layer_norm(
            x + attn_out, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
        )
        ffn = linear(act(linear(x, w, p + "intermediate.dense")), w, p + "output.dense")
        x = layer_norm(x + ffn, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)

    if config.get("pooling", "cls") == "mean":  # ofa-flexbert's --pooling mean: the unpadded tokens' mean
        keep = (input_ids != pad_id).astype(np.float64)[:, :, None]
        pooled_input = (x * keep).sum(axis=1) / keep.sum(axis=1)
    else:
        pooled_input = x[:, 0, :]
    pooled = np.tanh(linear(pooled_input, w, "pooler.dense"))
    return x, pooled


def classifier_logits(weights: Mapping[str, np.ndarray], pooled: np.ndarray) -> np.ndarray:
    """HF ``BertForSequenceClassification`` head: ``classifier`` Linear on the pooled output."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items() if k.startswith("classifier.")}
    return linear(pooled, w, "classifier")


def mean_pool_normalised(sequence_output: np.ndarray, input_ids: np.ndarray, pad_token_id: int = 0) -> np.ndarray:
    """sentence-transformers' mean pooling over non-pad tokens, then L2 normalisation."""
    keep = (np.asarray(input_ids) != pad_token_id).astype(np.float64)[:, :, None]
    emb = (sequence_output * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1e-9)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


# --- a supernet's weights as an independent dense model ---------------------------------------------

HF_NAMES = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
            "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
            "norm1": "attention.output.LayerNorm", "linear1": "intermediate.dense", "linear2": "output.dense",
            "norm2": "output.LayerNorm"}


def sliced_hf_weights(state, heads, head_dim, ffn, layers=None):
    """A paddle (super)net's weights as a *dense* HF-layout model keeping the first heads and FFN neurons.

    ``heads`` and ``ffn`` are one count for every layer, or a sequence with one count per kept
    layer; ``layers`` (default: all) are the encoder layers kept, renumbered 0, 1, ... in order,
    so a route (its layers, each at its own width) becomes an ordinary shallower, narrower BERT
    that :func:`bert_forward` runs with no knowledge of routes.
    """
    names = sorted({int(n.split(".")[3]) for n in state if n.startswith("bert.encoder.layers.")})
    layers = names if layers is None else list(layers)
    per_layer = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * len(layers)  # noqa: E731
    sizes = {old: (h, f) for old, h, f in zip(layers, per_layer(heads), per_layer(ffn))}
    out = {}
    for name, value in state.items():
        value = value.numpy().astype("float64")
        parts = name.split(".")
        if parts[1] == "encoder":
            old, sub, kind = int(parts[3]), ".".join(parts[4:-1]), parts[-1]
            if old not in sizes:
                continue
            hf = f"bert.encoder.layer.{layers.index(old)}.{HF_NAMES[sub]}.{kind}"
            if sub.startswith("norm"):
                out[hf] = value
                continue
            value = value.T if kind == "weight" else value  # paddle [in, out] -> torch [out, in]
            keep, neurons = sizes[old][0] * head_dim, sizes[old][1]
            if sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                value = value[:keep]
            elif sub == "self_attn.out_proj" and kind == "weight":
                value = value[:, :keep]
            elif sub == "linear1":
                value = value[:neurons]
            elif sub == "linear2" and kind == "weight":
                value = value[:, :neurons]
            out[hf] = value
        elif "layer_norm" in name:
            out[name.replace("layer_norm", "LayerNorm")] = value
        elif name.startswith(("bert.pooler", "classifier")) and name.endswith("weight"):
            out[name] = value.T
        else:
            out[name] = value
    return out
