"""The ``quiet_imports`` patch: silence the stack's harmless start-up messages.

Importing paddle prints, on every run and before anything of ours happens:

* ``UserWarning: No ccache found ...`` (paddle >= 3, ``paddle.utils.cpp_extension``): about
  compiling C++ extensions, which nothing here does;
* ``UserWarning: Setuptools is replacing distutils.`` (setuptools' shim, when paddle's
  dependencies import ``distutils``);
* ``RuntimeError: module compiled against ABI version 0x1000009 but this version of numpy is
  0x2000000`` (numpy 2 stacks): paddle tries ``import cv2``, and the opencv-python that
  paddleslim pins (4.6.0.66) is built for numpy 1.  Paddle catches the ImportError and goes on
  without OpenCV; numpy has already printed the error (docs/reference.md, Installing on paddle 3.3.1).

Six lines that look like failures precede every one-line error of ours (README, "Bad input").
:func:`install` filters the two warnings by their text and tries ``import cv2`` once with
stderr silenced; if it cannot load, ``sys.modules["cv2"] = None`` makes every later
``import cv2`` raise ImportError at once, which is what paddle already received.  A working
cv2 (numpy 1 stacks) is left imported as it is.  Like ``zlib_first`` it must run before paddle
is imported, so ``import patches`` runs it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings

HARMLESS_WARNINGS = ("No ccache found", "Setuptools is replacing distutils")


def install() -> None:
    """Filter the harmless warnings and block an opencv that cannot load; idempotent."""
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    _block_unloadable_cv2()


@contextlib.contextmanager
def _silenced_stderr():
    """Both Python's sys.stderr and file descriptor 2 (numpy prints through the former)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _block_unloadable_cv2() -> None:
    if "cv2" in sys.modules or importlib.util.find_spec("cv2") is None:
        return
    with _silenced_stderr():
        try:
            import cv2  # noqa: F401
        except ImportError:
            sys.modules["cv2"] = None  # type: ignore[assignment]
