"""Every fix ofa-flexbert applies to PaddlePaddle / PaddleSlim / PaddleNLP, in one place.

Why a package of its own: the stack we build on (paddleslim 2.6.0, paddlenlp 2.8.1) has
defects with no fixed release (see docs/reference.md, Which patch handles which).
Each fix lives here, is applied explicitly with :func:`apply` and undone with
:func:`restore` (exporting a static graph wants the stock forwards back), and has a test
in ``tests/stack/test_patches.py`` that fails without it.

The patches:

``zlib_first`` (import time, paddle 2.6.x)
    libpaddle.so 2.6.x exports its own old zlib; if it is loaded before Python's ``zlib``
    module, later gzip/zlib use segfaults (Paddle issue #70538).  Importing this package
    imports ``zlib`` -- so import ``patches`` (or ``ofa_flexbert``) before ``paddle``.
``mkl_fastpath`` (import time, x86-64 CPUs not made by Intel)
    Paddle's bundled MKL runs generic code on AMD CPUs (3x slower GEMMs); importing this
    package interposes ``mkl_serv_intel_cpu_true`` or sets ``MKL_DEBUG_CPU_TYPE`` before paddle
    loads MKL.  ``OFA_FLEXBERT_MKL_FASTPATH=0`` turns it off; see ``mkl_fastpath.py``.
``quiet_imports`` (import time, all versions)
    Importing paddle prints up to six lines of harmless warnings and a numpy ``RuntimeError``
    (an opencv built for numpy 1) before anything runs; see ``quiet_imports.py``.
``super_layernorm_forward`` (all versions)
    ``SuperLayerNorm.forward`` unpacks three outputs from ``_C_ops.layer_norm``, which
    returns one tensor since paddle 2.5: batch 2 or 4 raise, batch 3 is silently wrong.
``super_embedding_init`` / ``super_layernorm_init`` (paddle >= 3.2)
    ``SuperEmbedding.__init__`` / ``SuperLayerNorm.__init__`` pass arguments positionally
    that paddle 3.2+ (``Embedding``) and 3.3+ (``LayerNorm``) made keyword-only, so
    ``Convert`` raises ``TypeError``.
``encoder_layer_list_mask_forward`` (all versions)
    ``TransformerEncoderLayer.forward`` also accepts ``[mask, head_mask, width]`` (the stock forward
    runs for a tensor mask).  Layers are then called through ``__call__``, so forward hooks
    -- PaddleSlim's ``DistillConfig`` captures hidden states with them -- fire.
``bert_list_mask_forward`` (all versions)
    The tutorial's monkey-patched ``BertModel.forward``: accepts ``[mask, head_mask]``,
    can return every hidden state and run only chosen layers or a route.  The forward is
    ``ofa_flexbert.encoder``'s, the engine every stage runs; the patch installs it.  It never imports
    ``paddleslim.nas.ofa.utils.nlp_utils`` (a global patch that drops the attention scaling).
``no_strided_views`` (paddle >= 2.6, a flag)
    ``FLAGS_use_stride_kernel`` off: views from transpose/reshape/slice make every CPU op
    that reads them run a slow generic strided copy first (attention reads three per layer).
``gumbel_softmax_straight_through`` (all versions)
    ``paddle.nn.functional.gumbel_softmax(hard=True)`` has a zero gradient (its backward applies
    the softmax gradient to the one-hot output), where its documentation promises the soft
    sample's; route-trained gates could not learn.  See ``gumbel.py``.
``bert_classifier_layer_indices`` (all versions)
    ``BertForSequenceClassification.forward`` also takes ``layer_indices`` and passes it to the
    encoder: the stock classifier cannot run a subset of layers, so OFA's elastic depth has
    nothing to drive (docs/reference.md, Elastic depth in OFA).  Without ``layer_indices`` the stock forward runs.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- the zlib_first patch: must run before paddle is imported

from dataclasses import dataclass
from typing import Any, Callable

from . import mkl_fastpath, quiet_imports

mkl_fastpath.install()  # the mkl_fastpath patch: before paddle loads MKL
quiet_imports.install()  # the quiet_imports patch: also before paddle is imported

__all__ = ["apply", "restore", "applied", "PATCHES", "FLAG_PATCHES"]


@dataclass(frozen=True)
class Patch:
    """One replacement of one attribute, applied only where the installed stack needs it."""

    name: str
    target: Callable[[], Any]  # returns the object (class) that owns the attribute
    attribute: str
    replacement: Callable[[Any], Any]  # original attribute value -> new attribute value
    needed: Callable[[tuple[int, int]], bool]  # paddle (major, minor) -> apply?
    requires: tuple[str, ...] = ()  # patches this one cannot work without


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


def _bert_classifier():
    from paddlenlp.transformers import BertForSequenceClassification

    return BertForSequenceClassification


def _encoder_layer():
    """paddle's TransformerEncoderLayer, after paddlenlp installed its own forward on it.

    paddlenlp replaces ``TransformerEncoderLayer.forward`` when it is imported; importing it
    first makes that forward the "original" we extend (and keeps it from overwriting ours).
    """
    import paddle
    import paddlenlp.transformers  # noqa: F401

    return paddle.nn.TransformerEncoderLayer


def _functional():
    import paddle.nn.functional

    return paddle.nn.functional


def _replacement(module: str, name: str, wraps_original: bool = False) -> Callable[[Any], Any]:
    """Load ``<module>.<name>`` (``patches.<module>`` for a bare name); with ``wraps_original`` it is a
    factory taking the original.  The flexible forwards live in ``ofa_flexbert.encoder``, the engine
    every stage runs; installing them on PaddleNLP's classes is the patch."""

    def load(original):
        import importlib

        value = getattr(importlib.import_module(module if "." in module else f"patches.{module}"), name)
        return value(original) if wraps_original else value

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
        "encoder_layer_list_mask_forward",
        _encoder_layer,
        "forward",
        _replacement("ofa_flexbert.engine.encoder", "list_mask_encoder_layer_forward", wraps_original=True),
        lambda v: True,
    ),
    Patch(
        "bert_list_mask_forward",
        _bert_model,
        "forward",
        _replacement("ofa_flexbert.engine.encoder", "bert_forward"),
        lambda v: True,
        requires=("encoder_layer_list_mask_forward",),
    ),
    Patch(
        "bert_classifier_layer_indices",
        _bert_classifier,
        "forward",
        _replacement("ofa_flexbert.engine.encoder", "classifier_forward", wraps_original=True),
        lambda v: True,
        requires=("bert_list_mask_forward",),
    ),
    Patch(
        "gumbel_softmax_straight_through",
        _functional,
        "gumbel_softmax",
        _replacement("gumbel", "gumbel_softmax_straight_through", wraps_original=True),
        lambda v: True,
    ),
)


@dataclass(frozen=True)
class FlagPatch:
    """One paddle flag set to ``value`` while the patches are applied."""

    name: str
    flag: str
    value: Any
    needed: Callable[[tuple[int, int]], bool]


FLAG_PATCHES: tuple[FlagPatch, ...] = (
    # strided views (paddle >= 2.6): transpose/reshape/slice return views, and every CPU op that reads
    # one first runs a generic strided copy -- slower than the real transpose kernel it replaced;
    # off, a MiniLM training step takes 0.77x the time (docs/benchmarks.md, CPU speed)
    FlagPatch("no_strided_views", "FLAGS_use_stride_kernel", False, lambda v: v >= (2, 6)),
)

# name -> the call that undoes it.  The only global state of the project.
_UNDO: dict[str, Callable[[], None]] = {}


def _with_requirements(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` plus every patch they require, transitively."""
    wanted = set(names)
    while True:
        more = {r for p in PATCHES if p.name in wanted for r in p.requires} - wanted
        if not more:
            return tuple(wanted)
        wanted |= more


def _set_attribute(owner: Any, attribute: str, value: Any) -> Callable[[], None]:
    original = owner.__dict__[attribute]
    setattr(owner, attribute, value)
    return lambda: setattr(owner, attribute, original)


def _set_flag(flag: str, value: Any) -> Callable[[], None]:
    import paddle

    original = paddle.get_flags([flag])[flag]
    paddle.set_flags({flag: value})
    return lambda: paddle.set_flags({flag: original})


def apply(only: tuple[str, ...] | None = None) -> list[str]:
    """Install the patches the installed paddle needs; idempotent.

    ``only`` restricts to the named patches (tests use it to show each one's effect).
    Returns the names of the patches active afterwards.
    """
    version = paddle_version()
    if only is not None:
        only = _with_requirements(tuple(only))
    for patch in PATCHES + FLAG_PATCHES:
        if patch.name in _UNDO or not patch.needed(version):
            continue
        if only is not None and patch.name not in only:
            continue
        if isinstance(patch, FlagPatch):
            _UNDO[patch.name] = _set_flag(patch.flag, patch.value)
        else:
            owner = patch.target()
            _UNDO[patch.name] = _set_attribute(owner, patch.attribute, patch.replacement(owner.__dict__[patch.attribute]))
    return applied()


def restore() -> None:
    """Undo every patch, newest first (e.g. before ``paddle.jit.save`` of a stock model)."""
    for name in reversed(list(_UNDO)):
        _UNDO.pop(name)()


def applied() -> list[str]:
    """Names of the patches currently installed, in application order."""
    return list(_UNDO)
