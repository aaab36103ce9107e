"""The gate MLPs, what each reads, and the hook that lets them route the encoder.

Architecture as in the reference (docs/reference.md, Gate architecture): Linear(H, H) -> ReLU ->
Linear(H, K), weights N(0, 0.02), zero biases, no dropout.  What differs: gate 0 reads the
masked mean of the embedding output; with --gate_inputs pooled+probe a gate also reads its
:class:`Probe`'s prediction (the first Linear then takes H + C + 1 inputs).  The reference's reads position 0 of the embeddings,
``LayerNorm(E[CLS] + P[0] + T[0])``, the same vector for every input, so its first block's
width could never depend on the input (docs/reference.md, Gate placement).  Later gates read the model's own pooled vector
(``cls`` or ``mean``) of the layer they follow.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import paddle

from ofa_flexbert.engine.encoder import Between, pool
from ofa_flexbert.engine.routes import Width, config_width

from .settings import GateSettings, choose_classes


class Probe(paddle.nn.Layer):
    """The model's final head (pooler + classifier), frozen, read by a gate: vector [n, H] -> its class
    probabilities and their entropy divided by ln C, [n, C + 1].  Why: how sure the head already is
    after these layers is what early exit and the cascade decide on, and the pooled vector carries it
    only implicitly; with the prefix depth rule the head after layer j is the depth-(j+1) subnet's."""

    def __init__(self, hidden: int, labels: int):
        super().__init__()
        self.pooler = paddle.nn.Linear(hidden, hidden)
        self.classifier = paddle.nn.Linear(hidden, labels)
        for param in self.parameters():
            param.stop_gradient = True

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        log_p = paddle.nn.functional.log_softmax(self.classifier(paddle.tanh(self.pooler(x))), axis=-1)
        probs = log_p.exp()
        spread = -(probs * log_p).sum(axis=-1, keepdim=True) / math.log(int(log_p.shape[-1]))
        return paddle.concat([probs, spread], axis=-1)


class WidthGate(paddle.nn.Layer):
    """One gate: hidden vector [n, H] (with a probe: and what the probe makes of it) -> class logits [n, K]."""

    def __init__(self, hidden: int, classes: int, probe_labels: int = 0):
        super().__init__()
        init = paddle.ParamAttr(initializer=paddle.nn.initializer.Normal(std=0.02))
        zero = paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(0.0))
        self.probe = Probe(hidden, probe_labels) if probe_labels else None
        extra = probe_labels + 1 if probe_labels else 0
        self.dense = paddle.nn.Linear(hidden + extra, hidden, weight_attr=init, bias_attr=zero)
        self.out = paddle.nn.Linear(hidden, classes, weight_attr=init, bias_attr=zero)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.probe is not None:
            x = paddle.concat([x, self.probe(x)], axis=-1)
        return self.out(paddle.nn.functional.relu(self.dense(x)))


class Gates(paddle.nn.Layer):
    """All gates of a model, with the settings that say where they sit and what they mean."""

    def __init__(self, hidden: int, settings: GateSettings):
        super().__init__()
        self.settings = settings
        self.hidden = hidden
        self.record: dict = {}  # how they were trained, as gates.json says (gate_training, gate_target, ...)
        self.gates = paddle.nn.LayerList([WidthGate(hidden, settings.num_classes, settings.probe_labels)
                                          for _ in range(settings.num_gates)])

    def forward(self, features: Sequence[paddle.Tensor]) -> list[paddle.Tensor]:
        """Logits [n, K] of gate g on ``features[g]`` [n, H], for every gate."""
        return [gate(x) for gate, x in zip(self.gates, features)]

    def copy_probes(self, model) -> None:
        """Each gate's probe becomes a copy of ``model``'s final pooler and classifier (as an off-ramp is)."""
        for gate in self.gates:
            if gate.probe is not None:
                gate.probe.pooler.set_state_dict(model.bert.pooler.dense.state_dict())
                gate.probe.classifier.set_state_dict(model.classifier.state_dict())


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
