"""Every fix ofa-flexbert applies to PaddlePaddle / PaddleSlim / PaddleNLP, in one place.

Why a package of its own: the stack we build on (paddleslim 2.6.0, paddlenlp 2.8.1) has
defects with no fixed release (see ``../shared/docs/paddle-stack-notes.md`` §6, §12).
Each fix lives here, is applied explicitly with :func:`apply` and undone with
:func:`restore` (exporting a static graph wants the stock forwards back), and has a test
in ``tests/test_patches.py`` that fails without it.

The patches:

``zlib_first`` (import time, paddle 2.6.x)
    libpaddle.so 2.6.x exports its own old zlib; if it is loaded before Python's ``zlib``
    module, later gzip/zlib use segfaults (Paddle issue #70538).  Importing this package
    imports ``zlib`` -- so import ``patches`` (or ``ofa_flexbert``) before ``paddle``.
``super_layernorm_forward`` (all versions)
    ``SuperLayerNorm.forward`` unpacks three outputs from ``_C_ops.layer_norm``, which
    returns one tensor since paddle 2.5: batch 2 or 4 raise, batch 3 is silently wrong.
``super_init_kwargs`` (paddle >= 3.2)
    ``SuperEmbedding.__init__`` / ``SuperLayerNorm.__init__`` pass arguments positionally
    that paddle 3.2+ (``Embedding``) and 3.3+ (``LayerNorm``) made keyword-only, so
    ``Convert`` raises ``TypeError``.
``bert_list_mask_forward`` (all versions)
    The tutorial's monkey-patched ``BertModel.forward``: accepts ``[mask, head_mask]``,
    can return every hidden state and run only chosen layers.  It never imports
    ``paddleslim.nas.ofa.utils.nlp_utils`` (a global patch that drops the attention scaling).
"""
from __future__ import annotations

import zlib  # noqa: F401  -- the zlib_first patch: must run before paddle is imported

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["apply", "restore", "applied", "PATCHES"]


@dataclass(frozen=True)
class Patch:
    """One replacement of one attribute, applied only where the installed stack needs it."""

    name: str
    target: Callable[[], Any]  # returns the object (class) that owns the attribute
    attribute: str
    replacement: Callable[[], Any]  # returns the new attribute value
    needed: Callable[[tuple[int, int]], bool]  # paddle (major, minor) -> apply?


def paddle_version() -> tuple[int, int]:
    """(major, minor) of the installed paddle; develop builds ('0.0.0') count as newest."""
    import paddle

    parts = paddle.__version__.split(".")
    major, minor = int(parts[0]), int(parts[1])
    return (99, 0) if (major, minor) == (0, 0) else (major, minor)


def _super_layers():
    from paddleslim.nas.ofa import layers

    return layers


def _bert_model():
    from paddlenlp.transformers import BertModel

    return BertModel


def _replacement(module: str, name: str) -> Callable[[], Any]:
    def load():
        import importlib

        return getattr(importlib.import_module(f"patches.{module}"), name)

    return load


PATCHES: tuple[Patch, ...] = (
    Patch(
        "super_layernorm_forward",
        lambda: _super_layers().SuperLayerNorm,
        "forward",
        _replacement("super_layers", "super_layernorm_forward"),
        lambda v: True,
    ),
    Patch(
        "super_embedding_init",
        lambda: _super_layers().SuperEmbedding,
        "__init__",
        _replacement("super_layers", "super_embedding_init"),
        lambda v: v >= (3, 2),
    ),
    Patch(
        "super_layernorm_init",
        lambda: _super_layers().SuperLayerNorm,
        "__init__",
        _replacement("super_layers", "super_layernorm_init"),
        lambda v: v >= (3, 3),
    ),
    Patch(
        "bert_list_mask_forward",
        _bert_model,
        "forward",
        _replacement("bert_forward", "bert_forward"),
        lambda v: True,
    ),
)

# name -> (owner, attribute, original value).  The only global state of the project.
_ORIGINALS: dict[str, tuple[Any, str, Any]] = {}


def apply(only: tuple[str, ...] | None = None) -> list[str]:
    """Install the patches the installed paddle needs; idempotent.

    ``only`` restricts to the named patches (tests use it to show each one's effect).
    Returns the names of the patches active afterwards.
    """
    version = paddle_version()
    for patch in PATCHES:
        if patch.name in _ORIGINALS or not patch.needed(version):
            continue
        if only is not None and patch.name not in only:
            continue
        owner = patch.target()
        _ORIGINALS[patch.name] = (owner, patch.attribute, owner.__dict__[patch.attribute])
        setattr(owner, patch.attribute, patch.replacement())
    return applied()


def restore() -> None:
    """Put every patched attribute back (e.g. before ``paddle.jit.save`` of a stock model)."""
    for name in list(_ORIGINALS):
        owner, attribute, original = _ORIGINALS.pop(name)
        setattr(owner, attribute, original)


def applied() -> list[str]:
    """Names of the patches currently installed, in application order."""
    return list(_ORIGINALS)
