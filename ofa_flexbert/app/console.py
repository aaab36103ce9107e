"""What the console shows: our progress bars, evaluation lines and tables; library chatter only on request.

Our log lines (the ``ofa_flexbert`` logger) are printed by a handler of ours in one short format --
the message, ``warning:``/``error:`` before it when it is one.  Paddle installs a handler on the root
logger at import (``paddle.distributed.utils.log_utils``), which would print them a second time in its
format (timestamp, ``[    INFO]``, file and line); :func:`keep_root_handlers_off_our_lines` keeps it off
our lines (at start-up, and again when a stage has imported paddle).

PaddleNLP logs, in colour, every file it loads or saves and advice such as "If your task is
similar to the task the model of the checkpoint was trained on ..." -- about half of a demo's
lines.  Everything it could warn about that matters here is checked by us and reported in one
line (``models.load_model`` turns a mismatched classifier or missing weights into errors), so its
logger shows errors only, unless ``--verbose`` or ``OFA_FLEXBERT_VERBOSE=1``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator

VERBOSE_ENV = "OFA_FLEXBERT_VERBOSE"
LOGGER = "ofa_flexbert"


class ConsoleFormatter(logging.Formatter):
    """``message`` for information, ``warning: message`` / ``error: message`` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _NotOurs(logging.Filter):
    """On the root logger's handlers: our records are printed by our own handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == LOGGER or record.name.startswith(LOGGER + "."))


def configure_console() -> None:
    """Our logger at INFO with our handler and format, once per process; root handlers skip our lines."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h.formatter, ConsoleFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(ConsoleFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    keep_root_handlers_off_our_lines()


def keep_root_handlers_off_our_lines() -> None:
    """The root logger's plain stream handlers (paddle's, or a script's basicConfig) skip our records.

    Paddle adds its handler when it is imported, which ``predict`` and ``serve`` on onnxruntime never do
    and a stage does after the console was configured, so every stage calls this again once paddle is in
    (``stages.begin.setup``)."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _NotOurs) for f in handler.filters):
            handler.addFilter(_NotOurs())


def verbose_requested(flag: bool) -> bool:
    """--verbose, or the environment variable set to anything but empty or 0."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries(verbose: bool, loaded_only: bool = False) -> None:
    """PaddleNLP's logger at ERROR (DEBUG, its own default, when ``verbose``).  ``loaded_only``: only if
    PaddleNLP is already imported -- a predictor process does not import it (deploy/tokenizer.py), and
    importing it to quiet it would cost the 3 s and 280 MB the predictor's own tokenizer saves."""
    if loaded_only and "paddlenlp" not in sys.modules:
        return
    from paddlenlp.utils.log import logger

    logger.set_level("DEBUG" if verbose_requested(verbose) else "ERROR")


@contextlib.contextmanager
def quiet_native(verbose: bool) -> Iterator[None]:
    """Silence what paddle and paddle2onnx print while they trace or convert a model, unless ``verbose``.

    Tracing our engine emits Python warnings about list appends it will not record (the
    engine's optional hidden-state lists, unused in an export) and a C++ glog line about PIR
    outputs; paddle2onnx prints its progress from C++.  None of it is actionable, and C++ writes
    to file descriptors 1 and 2 directly, so both point at /dev/null for the duration; an
    exception still propagates (and is reported by us).
    """
    if verbose_requested(verbose):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fd in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
