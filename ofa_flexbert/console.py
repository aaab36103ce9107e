"""What the console shows: our progress bars, evaluation lines and tables; library chatter only on request.

PaddleNLP logs, in colour, every file it loads or saves and advice such as "If your task is
similar to the task the model of the checkpoint was trained on ..." -- about half of a demo's
lines.  Everything it could warn about that matters here is checked by us and reported in one
line (``models.load_model`` turns a mismatched classifier or missing weights into errors), so its
logger shows errors only, unless ``--verbose`` or ``OFA_FLEXBERT_VERBOSE=1``.
"""
from __future__ import annotations

import os

VERBOSE_ENV = "OFA_FLEXBERT_VERBOSE"


def verbose_requested(flag: bool) -> bool:
    """--verbose, or the environment variable set to anything but empty or 0."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries(verbose: bool) -> None:
    """PaddleNLP's logger at ERROR (DEBUG, its own default, when ``verbose``)."""
    from paddlenlp.utils.log import logger

    logger.set_level("DEBUG" if verbose_requested(verbose) else "ERROR")
