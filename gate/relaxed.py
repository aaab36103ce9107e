"""Straight-through routing: the gates' choices as the engine makes them, with gradients for the gates.

At inference a gate's argmax picks a width and the routed encoder runs only that width
(``encoder.run_rows``); nothing there is differentiable.  To train gates on the routes they
actually take (issue #16: trained on their targets' features, the gates meet other features at
inference), each gated layer here runs every class width and mixes the outputs with the gate's
one-hot choice -- Gumbel-softmax with ``hard=True`` (or the plain argmax), whose backward is the
soft probabilities' (the straight-through estimator).  The forward value is exactly the hard
route's, which a test checks against the engine with the same gates.  The backbone is frozen;
gradients reach the gates through the mixing of every later layer.

The cost is every distinct class width per layer, forward and backward: for widths 0.25-1,
about 2.5 full forwards plus their backward.
"""
from __future__ import annotations

from dataclasses import dataclass

import paddle
import paddle.nn.functional as F

from ofa_flexbert.engine.encoder import (ExpandedMask, additive_mask, encoder_layer, final_head, pool, pooling_of,
                                  token_weights)
from ofa_flexbert.engine.routes import Width, config_width

from .modules import Gates, gate_input_at


@dataclass
class RelaxedOutput:
    """Final logits [B, C]; per gate its logits [B, K] and its one-hot choice [B, K] (straight-through)."""

    logits: paddle.Tensor
    gate_logits: list[paddle.Tensor]
    choices: list[paddle.Tensor]


def straight_through(logits: paddle.Tensor, tau: float, noise: bool) -> paddle.Tensor:
    """[B, K] one-hot of the gate's choice whose gradient is the softmax's: Gumbel noise when ``noise``
    (training), else the argmax the router takes at inference."""
    if noise:
        return F.gumbel_softmax(logits, temperature=tau, hard=True)
    soft = F.softmax(logits / tau, axis=-1)
    hard = F.one_hot(paddle.argmax(logits, axis=-1), logits.shape[-1]).astype(soft.dtype)
    return hard - soft.detach() + soft


def relaxed_classify(model, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, gates: Gates,
                     class_widths, tau: float = 1.0, noise: bool = True) -> RelaxedOutput:
    """The gated model's logits with every gate decision differentiable (module docstring).

    ``class_widths[k]`` is class k's width multiplier.  No exits: the off-ramps are trained apart.
    """
    bert, settings = model.bert, gates.settings
    config, pooling = bert.config, pooling_of(bert)
    widths: list[Width] = [config_width(config, w) for w in class_widths]
    distinct = list(dict.fromkeys(widths))
    columns = [distinct.index(w) for w in widths]  # class k -> its width's output
    additive = additive_mask(bert, input_ids, None)
    weights, mask = token_weights(additive), ExpandedMask(additive)
    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    gate_logits, choices = [], []
    for g, step in enumerate(settings.gate_steps()):
        logits = gates.gates[g](gate_input_at(step, hidden, weights, pooling))
        choice = straight_through(logits, tau, noise)
        gate_logits.append(logits)
        choices.append(choice)
        for index in range(step, step + settings.layers_per_gate):
            layer = bert.encoder.layers[index]
            outputs = [encoder_layer(layer, hidden, mask, None, width=w)[0] for w in distinct]
            hidden = sum(choice[:, k].reshape([-1, 1, 1]) * outputs[columns[k]] for k in range(len(widths)))
    states = hidden if bert.encoder.norm is None else bert.encoder.norm(hidden)
    return RelaxedOutput(final_head(model)(pool(pooling, states, weights)), gate_logits, choices)
