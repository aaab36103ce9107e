"""Early-exit off-ramps (docs/reference.md, Off-ramps): a pooler + classifier after chosen layers,
and the entropy check that lets an input leave there.

An off-ramp after layer j is initialised from the model's final pooler and classifier, as in the
reference.  With the prefix depth rule that is exactly the trained head of the depth-(j+1)/L
subnet, which the depth stage trained on the first j+1 layers: so an input that leaves after
layer j gets what the static shallower subnet would give it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import paddle

from ofa_flexbert.engine.encoder import Between, Head, classify
from ofa_flexbert.engine.losses import soft_cross_entropy
from ofa_flexbert.engine.routes import Route, depth_for


def default_ramp_layers(num_layers: int) -> list[int]:
    """0-based layers after which off-ramps sit by default: the last of the first L/2 and of the first
    3L/4 layers (the reference's 5 and 8 of 12; 2 and 3 of all-MiniLM-L6-v2's 6)."""
    layers = {depth_for(num_layers, d) - 1 for d in (0.5, 0.75)}
    return sorted(layer for layer in layers if layer < num_layers - 1)


def check_ramp_layers(layers: Sequence[int], num_layers: int) -> None:
    """Off-ramps sit after layers 0..L-2 (after the last layer the model's own head answers)."""
    for layer in layers:
        if not 0 <= layer <= num_layers - 2:
            raise ValueError(f"--off_ramps: layer {layer} is not one an input can leave after "
                             f"(0-based, 0..{num_layers - 2} for this {num_layers}-layer model)")


class OffRamps(paddle.nn.Layer):
    """One pooler (Linear + tanh) and classifier per off-ramp layer."""

    def __init__(self, hidden: int, num_labels: int, layers: Sequence[int]):
        super().__init__()
        self.layers = tuple(int(layer) for layer in layers)
        self.hidden, self.num_labels = hidden, num_labels
        self.poolers = paddle.nn.LayerList([paddle.nn.Linear(hidden, hidden) for _ in self.layers])
        self.classifiers = paddle.nn.LayerList([paddle.nn.Linear(hidden, num_labels) for _ in self.layers])

    @classmethod
    def from_model(cls, model, layers: Sequence[int]) -> "OffRamps":
        """Off-ramps holding copies of ``model``'s final pooler and classifier."""
        config = model.bert.config
        ramps = cls(config.hidden_size, int(model.classifier.weight.shape[-1]), layers)
        for pooler, classifier in zip(ramps.poolers, ramps.classifiers):
            pooler.set_state_dict(model.bert.pooler.dense.state_dict())
            classifier.set_state_dict(model.classifier.state_dict())
        return ramps

    def head(self, index: int) -> Head:
        """Off-ramp ``index``: pooled vector [n, H] -> logits [n, C] (eval mode: no dropout)."""
        pooler, classifier = self.poolers[index], self.classifiers[index]
        return lambda pooled: classifier(paddle.tanh(pooler(pooled)))

    def forward(self, pooled: Sequence[paddle.Tensor]) -> list[paddle.Tensor]:
        """Each off-ramp's logits on what it reads (``pooled[i]`` [n, H])."""
        return [self.head(i)(x) for i, x in enumerate(pooled)]

    def heads(self) -> dict[int, Head]:
        """``{layers run: head}`` for ``encoder.classify(exit_heads=...)``."""
        return {layer + 1: self.head(i) for i, layer in enumerate(self.layers)}


def entropy(logits: paddle.Tensor, normalized: bool = False) -> paddle.Tensor:
    """Natural-log entropy of softmax(logits) per row; divided by ln C when ``normalized``."""
    log_p = paddle.nn.functional.log_softmax(logits, axis=-1)
    value = -(log_p.exp() * log_p).sum(axis=-1)
    return value / math.log(int(logits.shape[-1])) if normalized else value


class ExitCheck:
    """The between-layers hook of early exit: after an off-ramp's layer, rows whose off-ramp
    prediction has entropy strictly below ``threshold`` leave (the reference's rule)."""

    def __init__(self, ramps: OffRamps, threshold: float, normalized: bool = False,
                 last_step: Optional[int] = None):
        self.ramps, self.threshold, self.normalized = ramps, threshold, normalized
        self.steps = {layer + 1: i for i, layer in enumerate(ramps.layers)}
        self.last_step = last_step  # a route that ends at this step anyway needs no check

    def __call__(self, state: Between) -> None:
        index = self.steps.get(state.step)
        if index is None or state.step == self.last_step:
            return
        logits = self.ramps.head(index)(state.pooled())
        leave = (entropy(logits, self.normalized) < self.threshold).numpy()
        state.exit([bool(x) for x in np.atleast_1d(leave)])


def chain(*hooks):
    """One hook that runs ``hooks`` in order (the exit check before the gate, as in the reference)."""
    active = [h for h in hooks if h is not None]

    def run(state: Between) -> None:
        for hook in active:
            hook(state)

    return run


def ramp_inputs(model, batch: dict, ramps: OffRamps) -> tuple[list[paddle.Tensor], paddle.Tensor]:
    """Eval mode, no gradient, the full model: what each off-ramp reads (the pooled vector after
    its layer, [B, H] each) and the final logits [B, C] it is distilled from (--train_off_ramps)."""
    from .modules import FeatureRecorder

    recorder = FeatureRecorder([layer + 1 for layer in ramps.layers], read=lambda state: state.pooled())
    with paddle.no_grad():
        out = classify(model, batch["input_ids"], batch["token_type_ids"], Route.uniform(model.bert.config),
                       hook=recorder)
    return recorder.features, out.logits


def ramp_loss(logits: Sequence[paddle.Tensor], teacher: paddle.Tensor) -> paddle.Tensor:
    """Mean over off-ramps of the soft cross-entropy between each off-ramp's logits and the final ones."""
    return paddle.add_n([soft_cross_entropy(x, teacher) for x in logits]) / len(logits)

