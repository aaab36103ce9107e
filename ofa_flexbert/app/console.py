"""What the console shows: our progress bars, evaluation lines and tables; library chatter only on request.

PaddleNLP logs, in colour, every file it loads or saves and advice such as "If your task is
similar to the task the model of the checkpoint was trained on ..." -- about half of a demo's
lines.  Everything it could warn about that matters here is checked by us and reported in one
line (``models.load_model`` turns a mismatched classifier or missing weights into errors), so its
logger shows errors only, unless ``--verbose`` or ``OFA_FLEXBERT_VERBOSE=1``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

VERBOSE_ENV = "OFA_FLEXBERT_VERBOSE"


def verbose_requested(flag: bool) -> bool:
    """--verbose, or the environment variable set to anything but empty or 0."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries(verbose: bool) -> None:
    """PaddleNLP's logger at ERROR (DEBUG, its own default, when ``verbose``)."""
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
