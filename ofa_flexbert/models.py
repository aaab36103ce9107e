"""Model directories: check, load, save atomically, and import HuggingFace BERT checkpoints.

A *Paddle model directory* is what paddlenlp's ``save_pretrained`` writes:
``config.json``, ``model_state.pdparams`` (or a paddlenlp ``model.safetensors``),
``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``.  Every
command of the toolkit reads and writes only such directories; HuggingFace (PyTorch
layout) checkpoints enter once, through :func:`convert_hf_checkpoint`.

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
the output directory then really has no classifier, and :func:`load_model` adds
a fresh one of whatever size the task needs instead of refusing a random
classifier that merely has the "wrong" number of labels.

paddle/paddlenlp are imported lazily so that ``check_model_dir`` (used to
validate arguments) stays cheap and importing this module does not load Paddle.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from paddlenlp.transformers import BertForSequenceClassification, BertTokenizer

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")  # what a Paddle model dir may hold
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


_CONVERT_HINT = "convert it first: python run_ofa_glue.py convert --hf_dir {d} --output_dir <new dir>"

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
_HF_NAME_RE = re.compile(r"(^|\.)encoder\.layer\.\d+\.|LayerNorm")


# --------------------------------------------------------------------------- helpers


def _first_line(err: BaseException) -> str:
    """UserError messages must be one line; library errors often are not."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _read_json(path: str, where: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{where}: {os.path.basename(path)} is not readable JSON ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: {os.path.basename(path)} must hold a JSON object, got {type(data).__name__}")
    return data


def _safetensors_header(path: str, where: str) -> Dict[str, Any]:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON).

    Reading only the header tells a paddlenlp file from an HF one without loading
    any tensor (paddlenlp itself refuses HF files with an obscure "valid metadata" OSError).
    """
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or n > 100 * 1024 * 1024:
                raise ValueError(f"implausible header length {n}")
            header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise UserError(f"{where}: {os.path.basename(path)} is not a valid safetensors file ({_first_line(e)})") from None
    return header


def _safetensors_kind(path: str, where: str) -> str:
    """'paddle' (paddlenlp-written, metadata format 'np'), 'hf' (PyTorch layout) or 'unknown'."""
    header = _safetensors_header(path, where)
    meta = header.get("__metadata__") or {}
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == "np":
        return "paddle"
    if fmt == "pt" or any(_HF_NAME_RE.search(k) for k in header if k != "__metadata__"):
        return "hf"
    return "unknown"


# --------------------------------------------------------------------------- Paddle model dirs


def check_model_dir(model_dir: str, *, flag: str = "--model_dir") -> None:
    """Fail early, with one actionable line, on a directory that cannot be loaded.

    paddlenlp's own errors for these cases are multi-line, mention internal file
    search orders, or (for an HF ``model.safetensors``) talk about "metadata";
    an HF checkpoint passed by mistake gets the ``convert`` command to run instead.
    ``flag`` names the command-line option in messages (e.g. ``--model_dir``).
    """
    where = f"{flag} {model_dir}"
    if not os.path.exists(model_dir):
        raise UserError(f"{where}: directory not found")
    if not os.path.isdir(model_dir):
        raise UserError(f"{where}: not a directory")
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{where}: no config.json (expected a model directory written by save_pretrained)")
    _read_json(config_path, where)
    hint = _CONVERT_HINT.format(d=model_dir)
    st_path = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(st_path):
        kind = _safetensors_kind(st_path, where)
        if kind == "hf":
            # paddlenlp would pick this file before any model_state.pdparams and fail on it.
            raise UserError(f"{where}: model.safetensors is a HuggingFace checkpoint, {hint}")
        if kind != "paddle":
            raise UserError(
                f"{where}: model.safetensors lacks paddlenlp's metadata (format 'np'); re-save the model with save_pretrained"
            )
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        if any(os.path.isfile(os.path.join(model_dir, n)) for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
            raise UserError(f"{where}: pytorch_model.bin is a HuggingFace checkpoint, {hint}")
        raise UserError(f"{where}: no model weights (expected {' or '.join(WEIGHT_FILES)})")
    if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
        raise UserError(f"{where}: no vocab.txt (expected the tokenizer files saved beside the model)")


def recorded_pooling(model_dir: str, *, flag: str = "--model_dir") -> str:
    """The pooling ``model_dir`` records in config.json (``pooling``; absent: ``cls``, stock BERT's)."""
    from .routes import POOLINGS

    where = f"{flag} {model_dir}"
    pooling = _read_json(os.path.join(model_dir, "config.json"), where).get("pooling") or "cls"
    if pooling not in POOLINGS:
        raise UserError(f"{where}: config.json has pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    return pooling


def _weights_path(model_dir: str) -> str:
    """The weights file paddlenlp's from_pretrained will read (model.safetensors wins)."""
    for name in ("model.safetensors", "model_state.pdparams"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return path
    raise AssertionError("check_model_dir guarantees a weights file")  # pragma: no cover


def load_tokenizer(model_dir: str, *, flag: str = "--model_dir") -> "BertTokenizer":
    """The BERT WordPiece tokenizer saved in ``model_dir`` (vocab.txt + tokenizer_config.json).

    The whole directory is checked first (:func:`check_model_dir`): callers load
    the tokenizer before the model, and the user should hear about a missing or
    HF-format directory then, with the same message as from :func:`load_model`.
    ``BertTokenizer`` rather than ``AutoTokenizer``: every model here is a BERT,
    and naming the class keeps a stray ``tokenizer.json`` or ``tokenizer_class``
    from selecting some other implementation.
    """
    check_model_dir(model_dir, flag=flag)
    from paddlenlp.transformers import BertTokenizer

    return BertTokenizer.from_pretrained(model_dir)


def load_model(model_dir: str, num_labels: int, *, flag: str = "--model_dir",
               require_classifier: bool = False) -> "BertForSequenceClassification":
    """Load a Paddle model dir as a ``BertForSequenceClassification`` with ``num_labels`` outputs.

    The weights are read once here so that problems paddlenlp only *logs* become
    errors: a saved classifier of another size (paddle would skip it and leave a
    random one: typically a teacher fine-tuned for another task) and encoder
    tensors that are missing or shaped unlike config.json.  A checkpoint without
    a classifier (a bare BertModel) gets a freshly initialised one, as expected --
    unless ``require_classifier`` (a teacher must have been fine-tuned).
    """
    check_model_dir(model_dir, flag=flag)
    where = f"{flag} {model_dir}"
    from paddlenlp.transformers import BertForSequenceClassification
    from paddlenlp.transformers.model_utils import load_state_dict

    weights_path = _weights_path(model_dir)
    weights_name = os.path.basename(weights_path)
    try:
        state = load_state_dict(weights_path)
    except Exception as e:  # corrupt/truncated file: paddle and pickle raise many types
        raise UserError(f"{where}: cannot read {weights_name} ({_first_line(e)})") from None
    shapes = {k: tuple(int(s) for s in v.shape) for k, v in state.items()}

    cls_shape = shapes.get("classifier.weight")  # Paddle layout: [hidden, num_labels]
    if cls_shape is None and require_classifier:
        raise UserError(f"{where}: has no task classifier; this stage starts from a fine-tuned teacher "
                        "(run --stage finetune first)")
    if cls_shape is not None and cls_shape[-1] != num_labels:
        raise UserError(
            f"{where}: its classifier has {cls_shape[-1]} labels but the task needs {num_labels} "
            "(a model fine-tuned for another task?)"
        )

    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, state_dict=state)

    prefixed = any(k.startswith("bert.") for k in shapes)
    missing: List[str] = []
    for key, param in model.state_dict().items():
        ckpt_key = key if prefixed or not key.startswith("bert.") else key[len("bert."):]
        if ckpt_key not in shapes:
            if not key.startswith("classifier."):
                missing.append(ckpt_key)
            continue
        want = tuple(int(s) for s in param.shape)
        if shapes[ckpt_key] != want:
            raise UserError(
                f"{where}: {weights_name} holds {ckpt_key} with shape {list(shapes[ckpt_key])} "
                f"but config.json implies {list(want)}"
            )
    if missing:
        raise UserError(
            f"{where}: {weights_name} lacks {len(missing)} tensor(s) that config.json needs, e.g. {missing[0]}"
        )
    return model


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover  (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _is_weights_name(name: str) -> bool:
    return name.endswith((".pdparams", ".safetensors")) or name.endswith(".index.json")


def save_model(model: Any, tokenizer: Any, output_dir: str, state_dict: Optional[Dict[str, Any]] = None) -> None:
    """``save_pretrained`` model (and tokenizer) into ``output_dir`` atomically.

    Everything is first written into a temporary directory beside ``output_dir``
    (same filesystem, so ``os.replace`` is an atomic rename), synced, then moved
    in file by file with the weights last.  A crash or exception while saving
    therefore never leaves a half-written weights file where a good one was: the
    old files stay until their complete replacements exist.  Files of
    ``output_dir`` that the save does not produce are kept, except a weights file
    of the *other* format (e.g. an old ``model.safetensors`` beside a new
    ``model_state.pdparams``): paddlenlp would load that stale file first.
    ``tokenizer`` may be None to save the model only.  ``state_dict`` replaces the
    model's own (a supernet saves its weights under the plain model's names).
    """
    out = os.path.abspath(output_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{output_dir}: exists and is not a directory")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.saving-", dir=parent)
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        names = sorted(os.listdir(tmp), key=lambda n: (_is_weights_name(n), n))
        for name in names:
            if os.path.isfile(os.path.join(tmp, name)):
                _fsync_file(os.path.join(tmp, name))
        os.makedirs(out, exist_ok=True)
        for name in names:
            src, dst = os.path.join(tmp, name), os.path.join(out, name)
            if os.path.isdir(src) and os.path.isdir(dst):  # not written by BERT today; replace as a whole
                shutil.rmtree(dst)
            os.replace(src, dst)
        written = set(names)
        for stale in WEIGHT_FILES + tuple(n + ".index.json" for n in WEIGHT_FILES):
            stale_path = os.path.join(out, stale)
            if stale not in written and os.path.isfile(stale_path):
                os.remove(stale_path)
        _fsync_dir(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- HF import


def _check_hf_dir(hf_dir: str) -> Tuple[Dict[str, Any], List[str]]:
    """Validate an HF BERT checkpoint; return its config and the weight files to read."""
    where = f"--hf_dir {hf_dir}"
    if not os.path.exists(hf_dir):
        raise UserError(f"{where}: directory not found")
    if not os.path.isdir(hf_dir):
        raise UserError(f"{where}: not a directory")
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{where}: no config.json (expected a HuggingFace BERT checkpoint)")
    config = _read_json(config_path, where)
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
            weight_map = _read_json(index_path, where).get("weight_map")
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
            raise UserError(f"{where}: cannot read {os.path.basename(path)} ({_first_line(e)})") from None
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
        tokens.update(_read_json(stm_path, where))
    tc_path = os.path.join(hf_dir, "tokenizer_config.json")
    tc = _read_json(tc_path, where) if os.path.isfile(tc_path) else {}
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

    tensors = _load_hf_tensors(weight_files, where)
    weights_desc = " + ".join(os.path.basename(p) for p in weight_files)
    if len(weight_files) > 1:
        weights_desc = "the sharded weights"

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
    if has_classifier:
        model = BertForSequenceClassification(bert_config)
        bert = model.bert
    else:
        model = bert = BertModel(bert_config)

    expected = {k: tuple(int(s) for s in v.shape) for k, v in bert.state_dict().items()}
    missing = [k for k in expected if k not in encoder]
    if any(not k.startswith("pooler.") for k in missing):
        first = next(k for k in missing if not k.startswith("pooler."))
        raise UserError(
            f"{where}: {weights_desc} lacks {len(missing)} BERT tensor(s) that config.json needs "
            f"(num_hidden_layers {cfg['num_hidden_layers']}), e.g. the one mapped to {first}"
        )
    if missing:  # MLM-only checkpoints have no pooler; it is trained with the classifier
        logger.warning("%s: no pooler weights; the pooler is freshly initialised", hf_dir)
    for key, value in encoder.items():
        if key not in expected:
            raise UserError(
                f"{where}: {weights_desc} holds {source_of[key]}, which config.json does not account for "
                f"(num_hidden_layers {cfg['num_hidden_layers']})"
            )
        if tuple(value.shape) != expected[key]:
            hf_shape = list(tensors[source_of[key]].shape)
            raise UserError(
                f"{where}: {weights_desc} holds {source_of[key]} with shape {hf_shape}, "
                f"which does not match config.json"
            )

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


def freeze(model: Any) -> Any:
    """``model`` in eval mode with no parameter gradients: a distillation teacher or the gate stage's
    backbone, which never learn."""
    model.eval()
    for param in model.parameters():
        param.stop_gradient = True
    return model
