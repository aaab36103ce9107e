"""HuggingFace BERT checkpoints the tests write themselves (numpy + safetensors, HF names, torch
layout), so nothing is downloaded; tests/numpy_bert.py computes their outputs independently."""
import json
import os

import numpy as np
from safetensors.numpy import save_file



WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "big", "small", "red",
         "blue", "green", "and", "or", "not", "very", "good", "bad", "Hello", "World", "is", "was"]


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS  # 30 tokens


HF_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertForSequenceClassification"],
    "vocab_size": len(VOCAB),
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "id2label": {"0": "A", "1": "B", "2": "C"},
    "label2id": {"A": 0, "B": 1, "C": 2},
    "transformers_version": "4.40.0",
}


# Row 0 is full; row 1 ends in two pads.  Segments 0/1 as for a sentence pair.
INPUT_IDS = np.array([[2, 7, 8, 9, 3, 10, 11, 3],
                      [2, 12, 13, 3, 14, 3, 0, 0]], dtype="int64")


TOKEN_TYPES = np.array([[0, 0, 0, 0, 0, 1, 1, 1],
                        [0, 0, 0, 0, 1, 1, 0, 0]], dtype="int64")


def hf_weights(config, prefix="bert.", num_labels=3, seed=0):
    """Random HF-named tensors in torch layout (Linear weight [out, in]).

    Scales are large enough that a missing transpose, a swapped LayerNorm pair or a
    wrong embedding table changes the outputs far beyond the tolerance.
    """
    rng = np.random.default_rng(seed)
    h, inter = config["hidden_size"], config["intermediate_size"]

    def mat(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype("float32")

    w = {
        "embeddings.word_embeddings.weight": mat(config["vocab_size"], h, scale=1.0),
        "embeddings.position_embeddings.weight": mat(config["max_position_embeddings"], h, scale=0.5),
        "embeddings.token_type_embeddings.weight": mat(config["type_vocab_size"], h, scale=0.5),
        "embeddings.LayerNorm.weight": 1.0 + mat(h, scale=0.1),
        "embeddings.LayerNorm.bias": mat(h, scale=0.1),
        "pooler.dense.weight": mat(h, h),
        "pooler.dense.bias": mat(h),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            w[p + name + ".weight"] = mat(h, h)
            w[p + name + ".bias"] = mat(h, scale=0.1)
        w[p + "intermediate.dense.weight"] = mat(inter, h)
        w[p + "intermediate.dense.bias"] = mat(inter, scale=0.1)
        w[p + "output.dense.weight"] = mat(h, inter)
        w[p + "output.dense.bias"] = mat(h, scale=0.1)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + ln + ".weight"] = 1.0 + mat(h, scale=0.1)
            w[p + ln + ".bias"] = mat(h, scale=0.1)
    w = {prefix + k: v for k, v in w.items()}
    # A buffer real HF checkpoints carry; it is not a weight and must be ignored.
    w[prefix + "embeddings.position_ids"] = np.arange(config["max_position_embeddings"], dtype="int64")[None]
    if num_labels:
        w["classifier.weight"] = mat(num_labels, h, scale=0.5)
        w["classifier.bias"] = mat(num_labels, scale=0.5)
    return w


def write_hf_checkpoint(path, config=None, weights=None, tokenizer_config=None):
    config = dict(HF_CONFIG if config is None else config)
    if weights is None:
        bare = "BertModel" in config.get("architectures", [])
        weights = hf_weights(config, prefix="" if bare else "bert.", num_labels=0 if bare else 3)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(weights, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    if tokenizer_config is not None:
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config, f)
    return str(path), weights


def bare_config() -> dict:
    """HF_CONFIG as a bare ``BertModel`` (no classifier), the layout of sentence-transformers checkpoints."""
    config = dict(HF_CONFIG, architectures=["BertModel"])
    del config["id2label"], config["label2id"]
    return config
