"""Import a HuggingFace BERT checkpoint (PyTorch layout) into a Paddle model directory, without torch.

Why the converter maps tensor names itself instead of calling paddlenlp's
``from_pretrained(hf_dir, convert_from_torch=True)``:

* that call writes ``model_state.pdparams`` into the directory it reads from, and
  we promise never to write into the user's HF directory (a symlinked copy would
  avoid that, but only as long as no file of that name is linked through);
* it trusts ``architectures`` to decide whether names carry a ``bert.`` prefix,
  whereas the tensor names themselves say so unambiguously;
* a tensor it cannot map (old ``LayerNorm.gamma`` names, a missing layer) only
  produces a log warning and a *randomly initialised* weight; here every encoder
  tensor must be found with the right shape or the user gets a :class:`UserError`.

Reading uses ``paddlenlp.utils.serialization.load_torch``, which parses both
``pytorch_model.bin`` (a torch zip) and ``model.safetensors`` without torch.

A checkpoint without a sequence-classification head (a bare ``BertModel`` such
as sentence-transformers' all-MiniLM-L6-v2) is saved as a bare ``BertModel``:
the output directory then really has no classifier, and ``models.load_model`` adds
a fresh one of whatever size the task needs instead of refusing a random
classifier that merely has the "wrong" number of labels.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ofa_flexbert.errors import UserError
from .models import first_line, read_config, read_json, save_model

logger = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what an HF checkpoint may hold (unsharded)
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")  # sharded HF checkpoints

# HuggingFace BertConfig defaults: an HF config.json that omits a key means *these*
# values, not paddlenlp's (whose type_vocab_size default is 16 instead of 2).  The keys are
# both config.json's names and paddlenlp BertConfig's arguments.
_HF_BERT_DEFAULTS: Dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# Activations whose HF meaning equals paddle.nn.functional's function of the same
# name (HF "gelu" is the exact erf GELU, as is F.gelu); "gelu_new" etc. have none.
_SUPPORTED_ACTS = ("gelu", "relu", "silu")



def _hf_bert_settings(config: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The BERT settings of an HF config.json, defaults filled in, each checked for its type.

    A hand-edited or foreign config.json must fail with the key's name, not with a
    ZeroDivisionError or a paddle shape error deep inside model construction.
    """
    cfg = dict(_HF_BERT_DEFAULTS)
    cfg.update({k: config[k] for k in _HF_BERT_DEFAULTS if config.get(k) is not None})
    for key, default in _HF_BERT_DEFAULTS.items():
        value = cfg[key]
        if isinstance(default, int):
            smallest = 0 if key == "pad_token_id" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
                raise UserError(f"{where}: config.json has {key} {value!r}; expected an integer >= {smallest}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise UserError(f"{where}: config.json has {key} {value!r}; expected a non-negative number")
            cfg[key] = float(value)
    return cfg


# HF encoder-layer sub-module -> Paddle TransformerEncoderLayer sub-module.
_LAYER_MAP = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "linear1",
    "output.dense": "linear2",
    "output.LayerNorm": "norm2",
}
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def _check_hf_dir(hf_dir: str) -> Tuple[Dict[str, Any], List[str]]:
    """Validate an HF BERT checkpoint; return its config and the weight files to read."""
    where = f"--hf_dir {hf_dir}"
    config = read_config(hf_dir, where, "a HuggingFace BERT checkpoint")
    model_type = config.get("model_type")
    if model_type != "bert":
        raise UserError(f"{where}: config.json has model_type {model_type!r}, expected 'bert'")
    # safetensors first: no pickle involved, and it is what current HF checkpoints ship.
    weight_files: List[str] = []
    for single, index_name in zip(HF_WEIGHT_FILES, HF_INDEX_FILES):
        if os.path.isfile(os.path.join(hf_dir, single)):
            weight_files = [os.path.join(hf_dir, single)]
            break
        index_path = os.path.join(hf_dir, index_name)
        if os.path.isfile(index_path):  # sharded: read every shard the index names
            weight_map = read_json(index_path, where).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{where}: {index_name} has no weight_map")
            shards = sorted(set(weight_map.values()))
            for shard in shards:
                if not os.path.isfile(os.path.join(hf_dir, shard)):
                    raise UserError(f"{where}: {index_name} names {shard}, which is missing")
            weight_files = [os.path.join(hf_dir, s) for s in shards]
            break
    if not weight_files:
        raise UserError(f"{where}: no model weights (expected {' or '.join(HF_WEIGHT_FILES)})")
    if not os.path.isfile(os.path.join(hf_dir, "vocab.txt")):
        raise UserError(f"{where}: no vocab.txt (the tokenizer's WordPiece vocabulary)")
    return config, weight_files


def _to_float32_numpy(value: Any) -> np.ndarray:
    """A loaded tensor as numpy; floating types (fp16/bf16/fp64) become float32, the model's dtype."""
    if not isinstance(value, np.ndarray):  # paddle.Tensor (load_torch's safetensors path)
        if "float" in str(value.dtype) and "float32" not in str(value.dtype):
            value = value.astype("float32")
        value = value.numpy()
    if np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32:
        value = value.astype(np.float32)
    return value


def _load_hf_tensors(weight_files: List[str], where: str) -> Dict[str, np.ndarray]:
    from paddlenlp.utils.serialization import load_torch

    tensors: Dict[str, np.ndarray] = {}
    for path in weight_files:
        try:
            loaded = load_torch(path)
        except Exception as e:  # zip/pickle/safetensors errors of a corrupt file
            raise UserError(f"{where}: cannot read {os.path.basename(path)} ({first_line(e)})") from None
        for k, v in loaded.items():
            tensors[k] = _to_float32_numpy(v)
    return tensors


def _map_encoder_name(name: str) -> Optional[Tuple[str, bool]]:
    """HF encoder tensor name (without ``bert.``) -> (Paddle name, transpose?), or None if not BERT's.

    torch ``Linear.weight`` is ``[out, in]`` and Paddle's is ``[in, out]``: every
    Linear weight is transposed; embeddings and LayerNorm parameters are not.
    """
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if name in (
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
    ):
        return name, False
    if name in ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"):
        return name.replace("LayerNorm", "layer_norm"), False
    if name in ("pooler.dense.weight", "pooler.dense.bias"):
        return name, name.endswith(".weight")
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _LAYER_MAP:
        sub = _LAYER_MAP[m.group(2)]
        is_linear = "LayerNorm" not in m.group(2)
        return f"encoder.layers.{m.group(1)}.{sub}.{m.group(3)}", is_linear and m.group(3) == "weight"
    return None


def _hf_tokenizer_kwargs(hf_dir: str, where: str, max_positions: int) -> Dict[str, Any]:
    """BertTokenizer arguments from HF's tokenizer_config.json / special_tokens_map.json (both optional)."""
    kwargs: Dict[str, Any] = {}
    tokens: Dict[str, Any] = {}
    stm_path = os.path.join(hf_dir, "special_tokens_map.json")
    if os.path.isfile(stm_path):
        tokens.update(read_json(stm_path, where))
    tc_path = os.path.join(hf_dir, "tokenizer_config.json")
    tc = read_json(tc_path, where) if os.path.isfile(tc_path) else {}
    for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        if key in tc:
            tokens[key] = tc[key]
    for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = tokens.get(key)
        if isinstance(value, dict):  # serialised AddedToken
            value = value.get("content")
        if isinstance(value, str):
            kwargs[key] = value
    for key in ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars", "strip_accents", "never_split"):
        if key in tc:
            kwargs[key] = tc[key]
    max_len = tc.get("model_max_length")
    # HF writes a huge sentinel (1e30) when unknown; positions beyond the table cannot work anyway.
    kwargs["model_max_length"] = (
        int(min(max_len, max_positions)) if isinstance(max_len, (int, float)) and max_len > 0 else max_positions
    )
    return kwargs


def _checked_settings(config: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The BertConfig settings of an HF config.json, refused in one line where paddlenlp's BERT differs."""
    cfg = _hf_bert_settings(config, where)
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(
            f"{where}: config.json has position_embedding_type {config['position_embedding_type']!r}; "
            "paddlenlp's BERT supports only 'absolute'"
        )
    if cfg["hidden_act"] not in _SUPPORTED_ACTS:
        raise UserError(
            f"{where}: config.json has hidden_act {cfg['hidden_act']!r}; supported: {', '.join(_SUPPORTED_ACTS)}"
        )
    if cfg["hidden_size"] % cfg["num_attention_heads"] != 0:
        raise UserError(
            f"{where}: config.json hidden_size {cfg['hidden_size']} is not a multiple of "
            f"num_attention_heads {cfg['num_attention_heads']}"
        )
    return cfg


def _encoder_tensors(tensors: Dict[str, np.ndarray], hf_dir: str, where: str,
                     weights_desc: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """The encoder's tensors under paddlenlp's names (Linear weights transposed), and each one's HF name."""
    # The names say whether the encoder sits under "bert." (task models) or at the top (BertModel).
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    encoder: Dict[str, np.ndarray] = {}
    source_of: Dict[str, str] = {}
    ignored: List[str] = []
    for name, value in tensors.items():
        mapped = _map_encoder_name(name[len(prefix):]) if name.startswith(prefix) else None
        if mapped is None:
            if not name.startswith("classifier."):
                ignored.append(name)
            continue
        target, transpose = mapped
        encoder[target] = np.ascontiguousarray(value.T) if transpose else value
        source_of[target] = name
    if "embeddings.word_embeddings.weight" not in encoder:
        raise UserError(
            f"{where}: {weights_desc} holds no BERT encoder (no embeddings.word_embeddings.weight, "
            "with or without the bert. prefix)"
        )
    if ignored:
        logger.info("%s: not part of the BERT encoder, ignored: %s", hf_dir, ", ".join(sorted(ignored)))
    return encoder, source_of


def _check_shapes(bert, encoder: Dict[str, np.ndarray], source_of: Dict[str, str], tensors: Dict[str, np.ndarray],
                  hf_dir: str, where: str, weights_desc: str, num_layers: int) -> None:
    """Every tensor config.json needs is there with its shape, and nothing it does not account for."""
    expected = {k: tuple(int(s) for s in v.shape) for k, v in bert.state_dict().items()}
    missing = [k for k in expected if k not in encoder]
    if any(not k.startswith("pooler.") for k in missing):
        first = next(k for k in missing if not k.startswith("pooler."))
        raise UserError(
            f"{where}: {weights_desc} lacks {len(missing)} BERT tensor(s) that config.json needs "
            f"(num_hidden_layers {num_layers}), e.g. the one mapped to {first}"
        )
    if missing:  # MLM-only checkpoints have no pooler; it is trained with the classifier
        logger.warning("%s: no pooler weights; the pooler is freshly initialised", hf_dir)
    for key, value in encoder.items():
        if key not in expected:
            raise UserError(
                f"{where}: {weights_desc} holds {source_of[key]}, which config.json does not account for "
                f"(num_hidden_layers {num_layers})"
            )
        if tuple(value.shape) != expected[key]:
            hf_shape = list(tensors[source_of[key]].shape)
            raise UserError(
                f"{where}: {weights_desc} holds {source_of[key]} with shape {hf_shape}, "
                f"which does not match config.json"
            )


# sentence-transformers' Pooling module: which of its modes a model directory records as its ``pooling``.
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}


def sentence_transformers_pooling(hf_dir: str) -> Optional[str]:
    """The pooling a sentence-transformers checkpoint was trained with (``modules.json`` and its Pooling
    module's config.json): ``mean`` or ``cls``; None for a plain HF checkpoint.

    Why it matters: all-MiniLM-L6-v2 is trained on the token mean, and its shallow subnets put almost
    nothing into [CLS] (docs/benchmarks.md); recording ``mean`` lets --stage finetune follow the
    checkpoint without --pooling.  A mode this toolkit lacks (max, weighted mean, several at once)
    gets a warning, and [CLS] is used, as for any BERT.
    """
    where = os.path.join(hf_dir, "modules.json")
    if not os.path.isfile(where):
        return None
    modules = read_json(where, f"--hf_dir {hf_dir}", expect=list)
    folders = [m.get("path", "") for m in modules if isinstance(m, dict) and m.get("type") == _ST_POOLING]
    if not folders:
        return None
    config_path = os.path.join(hf_dir, folders[0], "config.json")
    modes = read_json(config_path, f"--hf_dir {hf_dir}") if os.path.isfile(config_path) else {}
    chosen = sorted(k for k, v in modes.items() if k.startswith("pooling_mode") and v is True)
    if len(chosen) == 1 and chosen[0] in _ST_MODES:
        return _ST_MODES[chosen[0]]
    logger.warning("%s: sentence-transformers pooling %s is not supported; the model pools [CLS] (--pooling mean "
                   "at --stage finetune to use the token mean)", hf_dir, ", ".join(chosen) or "(none)")
    return None


def convert_hf_checkpoint(hf_dir: str, output_dir: str, num_labels: int = 2) -> None:
    """Import an HF BERT checkpoint into a Paddle model directory, without torch.

    Reads config.json, model.safetensors or pytorch_model.bin (sharded or not),
    vocab.txt and the optional tokenizer_config.json / special_tokens_map.json;
    writes config.json, model_state.pdparams, vocab.txt, tokenizer_config.json
    and special_tokens_map.json through :func:`save_model` (atomic).  Nothing is
    ever written into ``hf_dir`` (see the module docstring for why tensor names
    are mapped here).  The HF config values win over paddlenlp's defaults
    (``type_vocab_size`` 2, ``layer_norm_eps`` 1e-12), and ``do_lower_case`` etc.
    are kept from the HF tokenizer config.

    A ``BertForSequenceClassification`` checkpoint keeps its classifier, which
    must then have ``num_labels`` outputs; any other checkpoint (``BertModel``,
    ``BertForMaskedLM``...) is saved as a bare ``BertModel``, whose classifier
    :func:`load_model` initialises for the task.
    """
    where = f"--hf_dir {hf_dir}"
    config, weight_files = _check_hf_dir(hf_dir)
    real_hf, real_out = os.path.realpath(hf_dir), os.path.realpath(output_dir)
    if real_out == real_hf or real_out.startswith(real_hf + os.sep):
        raise UserError(f"--output_dir {output_dir}: must not be --hf_dir or inside it (the HF checkpoint is left untouched)")

    cfg = _checked_settings(config, where)
    pooling = sentence_transformers_pooling(hf_dir)
    tensors = _load_hf_tensors(weight_files, where)
    weights_desc = " + ".join(os.path.basename(p) for p in weight_files)
    if len(weight_files) > 1:
        weights_desc = "the sharded weights"

    encoder, source_of = _encoder_tensors(tensors, hf_dir, where, weights_desc)

    architectures = config.get("architectures") or []
    has_classifier = "classifier.weight" in tensors and "classifier.bias" in tensors
    if has_classifier and architectures and "BertForSequenceClassification" not in architectures:
        # Token-classification / multiple-choice heads look alike but mean something else.
        logger.info("%s: classifier of %s dropped (not a sequence classifier)", hf_dir, architectures)
        has_classifier = False
    if has_classifier:
        cls_labels = int(tensors["classifier.weight"].shape[0])  # torch layout [num_labels, hidden]
        if cls_labels != num_labels:
            raise UserError(
                f"{where}: its classifier has {cls_labels} labels but num_labels is {num_labels} "
                "(a checkpoint fine-tuned for another task?)"
            )

    import paddle
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    bert_config = BertConfig(**cfg, num_labels=num_labels, classifier_dropout=config.get("classifier_dropout"))
    if pooling:
        bert_config.pooling = pooling  # recorded in config.json: --stage finetune follows it
        logger.info("%s: sentence-transformers pooling '%s', recorded in the model (--stage finetune follows it)",
                    hf_dir, pooling)
    if has_classifier:
        model = BertForSequenceClassification(bert_config)
        bert = model.bert
    else:
        model = bert = BertModel(bert_config)

    _check_shapes(bert, encoder, source_of, tensors, hf_dir, where, weights_desc, cfg["num_hidden_layers"])

    state = {k: paddle.to_tensor(v) for k, v in encoder.items()}
    if has_classifier:
        state = {"bert." + k: v for k, v in state.items()}
        state["classifier.weight"] = paddle.to_tensor(np.ascontiguousarray(tensors["classifier.weight"].T))
        state["classifier.bias"] = paddle.to_tensor(tensors["classifier.bias"])
        want = {k: tuple(int(s) for s in v.shape) for k, v in model.state_dict().items()}
        for key in ("classifier.weight", "classifier.bias"):
            if tuple(int(s) for s in state[key].shape) != want[key]:
                raise UserError(
                    f"{where}: {weights_desc} holds {key} with shape "
                    f"{list(tensors[key].shape)}, which does not match config.json"
                )
    model.set_state_dict(state)

    tokenizer = BertTokenizer(
        vocab_file=os.path.join(hf_dir, "vocab.txt"),
        **_hf_tokenizer_kwargs(hf_dir, where, cfg["max_position_embeddings"]),
    )
    if tokenizer.pad_token_id != bert_config.pad_token_id:
        # paddlenlp's BertModel masks attention where input_ids == pad_token_id.
        raise UserError(
            f"{where}: vocab.txt gives {tokenizer.pad_token} the id {tokenizer.pad_token_id} "
            f"but config.json has pad_token_id {bert_config.pad_token_id}"
        )
    model.eval()
    save_model(model, tokenizer, output_dir)
