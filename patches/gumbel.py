"""The ``gumbel_softmax_straight_through`` patch: ``hard=True`` differentiates as the soft sample.

``paddle.nn.functional.gumbel_softmax(x, hard=True)`` is documented as PyTorch's: one-hot
samples "differentiated as if it is the soft sample" (the straight-through estimator).  Its
backward kernel, in paddle 2.6.2 and 3.3.1 alike, applies the softmax gradient to the one-hot
output instead, ``y ⊙ (dy − Σ dy·y)``, which is zero everywhere: gates trained through hard
choices (``gate.relaxed``, ``--gate_training routes``) never move.  The replacement draws the
soft sample with the stock function and returns ``one_hot − soft.detach() + soft``: the same
one-hot forward, the soft sample's gradient.
"""
from __future__ import annotations

from typing import Callable


def gumbel_softmax_straight_through(original: Callable) -> Callable:
    """``original`` with ``hard=True`` made straight-through (module docstring)."""
    import paddle

    def gumbel_softmax(x, temperature: float = 1.0, hard: bool = False, axis: int = -1, name=None):
        soft = original(x, temperature, False, axis, name)
        if not hard:
            return soft
        index = paddle.argmax(soft, axis=axis, keepdim=True)
        one_hot = paddle.put_along_axis(paddle.zeros_like(soft), index, 1.0, axis)
        return one_hot - soft.detach() + soft

    gumbel_softmax.__doc__ = original.__doc__
    return gumbel_softmax
