"""ofa-flexbert: width- and depth-flexible BERT with PaddleSlim OFA.

Importing the package first imports :mod:`patches`, whose import-time part only
loads Python's ``zlib`` before Paddle does (Paddle 2.6.x crashes otherwise, see
``patches/__init__.py``).  The library patches themselves are applied explicitly
with ``patches.apply()``.
"""
import patches  # noqa: F401  (must precede any paddle import)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``ofa_flexbert.Predictor`` without paying for paddle's import until it is used."""
    if name == "Predictor":
        from ofa_flexbert.deploy.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'ofa_flexbert' has no attribute {name!r}")
