"""The gate MLPs, what each reads, and the hook that lets them route the encoder.

Architecture as in the reference (docs/reference.md, Gate architecture): Linear(H, H) -> ReLU ->
Linear(H, K), weights N(0, 0.02), zero biases, no dropout.  What differs: gate 0 reads the
masked mean of the embedding output.  The reference's reads position 0 of the embeddings,
``LayerNorm(E[CLS] + P[0] + T[0])``, the same vector for every input, so its first block's
width could never depend on the input (docs/reference.md, Gate placement).  Later gates read the model's own pooled vector
(``cls`` or ``mean``) of the layer they follow.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import paddle

from ofa_flexbert.engine.encoder import Between, pool
from ofa_flexbert.engine.routes import Width, config_width

from .settings import GateSettings, choose_classes


class WidthGate(paddle.nn.Layer):
    """One gate: hidden vector [n, H] -> class logits [n, K]."""

    def __init__(self, hidden: int, classes: int):
        super().__init__()
        init = paddle.ParamAttr(initializer=paddle.nn.initializer.Normal(std=0.02))
        zero = paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(0.0))
        self.dense = paddle.nn.Linear(hidden, hidden, weight_attr=init, bias_attr=zero)
        self.out = paddle.nn.Linear(hidden, classes, weight_attr=init, bias_attr=zero)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.out(paddle.nn.functional.relu(self.dense(x)))


class Gates(paddle.nn.Layer):
    """All gates of a model, with the settings that say where they sit and what they mean."""

    def __init__(self, hidden: int, settings: GateSettings):
        super().__init__()
        self.settings = settings
        self.hidden = hidden
        self.record: dict = {}  # how they were trained, as gates.json says (gate_training, gate_target, ...)
        self.gates = paddle.nn.LayerList([WidthGate(hidden, settings.num_classes) for _ in range(settings.num_gates)])

    def forward(self, features: Sequence[paddle.Tensor]) -> list[paddle.Tensor]:
        """Logits [n, K] of gate g on ``features[g]`` [n, H], for every gate."""
        return [gate(x) for gate, x in zip(self.gates, features)]


def gate_input(state: Between) -> paddle.Tensor:
    """[n, H]: what the gate deciding at ``state.step`` reads (:func:`gate_input_at`)."""
    return gate_input_at(state.step, state.hidden, state.weights, state.pooling)


def gate_input_at(step: int, hidden: paddle.Tensor, weights: paddle.Tensor, pooling: str) -> paddle.Tensor:
    """[n, H]: what a gate deciding after ``step`` layers reads -- the masked token mean of the
    embeddings at step 0 (input-dependent, unlike [CLS] there), else the model's pooled vector."""
    return pool("mean" if step == 0 else pooling, hidden, weights)


class FeatureRecorder:
    """A between-layers hook that records, at each of ``steps``, a vector per row (rows in batch order):
    by default what the gate deciding there reads (:func:`gate_input`), or ``read(state)``.

    Used with uniform routes (no row leaves early), so every row reaches every step.
    """

    def __init__(self, steps: Sequence[int], read=gate_input):
        self.steps, self.read = list(steps), read
        self.features: list[Optional[paddle.Tensor]] = [None] * len(self.steps)

    def __call__(self, state: Between) -> None:
        if state.step in self.steps:
            order = np.argsort(state.rows)
            x = self.read(state)
            if list(order) != list(range(len(order))):
                x = paddle.gather(x, paddle.to_tensor(order, dtype="int64"), axis=0)
            self.features[self.steps.index(state.step)] = x


class GateRouter:
    """The between-layers hook of width-dynamic inference: each gate's choice sets the next block's width
    (its argmax, or with ``threshold`` the narrowest class its cumulative softmax reaches it at:
    :func:`gate.settings.choose_classes`).

    ``decisions[g]`` records, per original batch row, the class gate g chose (-1: the row had
    left before gate g).  With ``replay`` [G, batch_size] the gates do not run: row b takes class
    ``replay[g, b]`` at gate g (the random-gates ablation deals the gated model's routes out so).
    """

    def __init__(self, gates: Gates, config, batch_size: int, class_widths: Optional[Sequence[float]] = None,
                 replay: Optional[np.ndarray] = None, threshold: Optional[float] = None):
        self.gates, self.settings, self.replay, self.threshold = gates, gates.settings, replay, threshold
        widths = self.settings.class_widths if class_widths is None else class_widths
        self.widths: list[Width] = [config_width(config, w) for w in widths]
        self.steps = self.settings.gate_steps()
        self.decisions = np.full((self.settings.num_gates, batch_size), -1, dtype="int64")

    def __call__(self, state: Between) -> None:
        if state.step not in self.steps:
            return
        g = self.steps.index(state.step)
        if self.replay is not None:
            classes = np.asarray(self.replay[g])[state.rows]
        else:
            classes = choose_classes(self.gates.gates[g](gate_input(state)).numpy(), self.threshold)
        self.decisions[g, state.rows] = classes
        state.set_widths([self.widths[int(c)] for c in classes], self.settings.layers_per_gate)
