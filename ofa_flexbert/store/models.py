"""Paddle model directories: check, load and save them atomically.

A *Paddle model directory* is what paddlenlp's ``save_pretrained`` writes:
``config.json``, ``model_state.pdparams`` (or a paddlenlp ``model.safetensors``),
``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``.  Every
command of the toolkit reads and writes only such directories; HuggingFace (PyTorch
layout) checkpoints enter once, through ``hf_import.convert_hf_checkpoint``.  A directory
holding a bare ``BertModel`` (no classifier) is valid: :func:`load_model` adds a fresh
classifier of whatever size the task needs.

paddle/paddlenlp are imported lazily so that ``check_model_dir`` (used to
validate arguments) stays cheap and importing this module does not load Paddle.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .atomic import move_files_in, staging
from ofa_flexbert.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from paddlenlp.transformers import BertForSequenceClassification, BertTokenizer

WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")  # what a Paddle model dir may hold

_CONVERT_HINT = "convert it first: python run_ofa_glue.py convert --hf_dir {d} --output_dir <new dir>"

_HF_NAME_RE = re.compile(r"(^|\.)encoder\.layer\.\d+\.|LayerNorm")


# --------------------------------------------------------------------------- helpers


def first_line(err: BaseException) -> str:
    """UserError messages must be one line; library errors often are not."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def read_json(path: str, where: str, expect: type = dict) -> Any:
    """The JSON value in ``path``, which must be an ``expect`` (an object by default); one-line errors."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{where}: {os.path.basename(path)} is not readable JSON ({first_line(e)})") from None
    if not isinstance(data, expect):
        what = "a JSON object" if expect is dict else "a JSON list" if expect is list else expect.__name__
        raise UserError(f"{where}: {os.path.basename(path)} must hold {what}, got {type(data).__name__}")
    return data


def read_config(directory: str, where: str, expected: str) -> Dict[str, Any]:
    """The config.json of ``directory``, with one-line errors for a missing directory, a file, no
    config.json (naming what was ``expected`` there) or unreadable JSON."""
    if not os.path.exists(directory):
        raise UserError(f"{where}: directory not found")
    if not os.path.isdir(directory):
        raise UserError(f"{where}: not a directory")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{where}: no config.json (expected {expected})")
    return read_json(config_path, where)


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
        raise UserError(f"{where}: {os.path.basename(path)} is not a valid safetensors file ({first_line(e)})") from None
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
    read_config(model_dir, where, "a model directory written by save_pretrained")
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
    from ofa_flexbert.engine.routes import POOLINGS

    where = f"{flag} {model_dir}"
    pooling = read_json(os.path.join(model_dir, "config.json"), where).get("pooling") or "cls"
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
        raise UserError(f"{where}: cannot read {weights_name} ({first_line(e)})") from None
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
    with staging(os.path.dirname(out), os.path.basename(out) + ".saving") as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        written = set(move_files_in(tmp, out, last=_is_weights_name))
    for stale in WEIGHT_FILES + tuple(n + ".index.json" for n in WEIGHT_FILES):
        stale_path = os.path.join(out, stale)
        if stale not in written and os.path.isfile(stale_path):
            os.remove(stale_path)


# --------------------------------------------------------------------------- HF import


def freeze(model: Any) -> Any:
    """``model`` in eval mode with no parameter gradients: a distillation teacher or the gate stage's
    backbone, which never learn."""
    model.eval()
    for param in model.parameters():
        param.stop_gradient = True
    return model
