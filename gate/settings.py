"""Where the gates sit, what their classes mean and how a gate's logits become a class: pure rules, no paddle.

Why separate: accounting (a gate's MACs), search and export manifests need these facts
without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_num_gates(num_gates: int, num_layers: int) -> None:
    """``num_gates`` must divide the layer count (the reference silently coerces other values to 12)."""
    if num_gates < 1 or num_layers % num_gates:
        raise ValueError(f"--num_gates {num_gates}: must divide the model's {num_layers} layers "
                         f"(one of {', '.join(map(str, divisors(num_layers)))})")


@dataclass(frozen=True)
class GateSettings:
    """The gates of one model.

    ``gate_setting`` are the widths whose uniform subnets define the training targets, in
    increasing order: class k means "width ``gate_setting[k]`` is the smallest that gets this
    input right" (the last class also means "none does").  ``class_widths`` maps class k to
    the width the input then runs at (the reference's ``--width_mult_list`` at inference; four
    equal values make a static subnet).  ``num_gates`` gates each decide the width of the next
    ``num_layers / num_gates`` layers; gate 0 reads the embeddings.  ``probe_labels`` C > 0
    (--gate_inputs pooled+probe): each gate also reads what a probe -- a frozen copy of the model's
    final head, C labels -- predicts from the same vector (its class probabilities and normalised
    entropy), the signal early exit and the cascade stop on.
    """

    num_gates: int
    num_layers: int
    gate_setting: tuple[float, ...]
    class_widths: tuple[float, ...]
    probe_labels: int = 0

    def __post_init__(self):
        check_num_gates(self.num_gates, self.num_layers)
        if len(self.gate_setting) < 2:
            raise ValueError(f"--gate_setting: needs at least two widths, got {list(self.gate_setting)}")
        if list(self.gate_setting) != sorted(set(self.gate_setting)):
            raise ValueError(f"--gate_setting: widths must increase, got {','.join(f'{w:g}' for w in self.gate_setting)}")
        if len(self.class_widths) != len(self.gate_setting):
            raise ValueError(f"--width_mult_list: the gates have {len(self.gate_setting)} classes (--gate_setting), "
                             f"so it needs {len(self.gate_setting)} widths, got {len(self.class_widths)}")
        for w in (*self.gate_setting, *self.class_widths):
            if not 0.0 < w <= 1.0:
                raise ValueError(f"gate widths must be in (0, 1], got {w:g}")
        if self.probe_labels == 1:
            raise ValueError("--gate_inputs pooled+probe: the probe's entropy needs a classification task (2 or more labels)")

    @property
    def num_classes(self) -> int:
        return len(self.gate_setting)

    @property
    def layers_per_gate(self) -> int:
        return self.num_layers // self.num_gates

    def gate_steps(self) -> list[int]:
        """The encoder step (layers run so far) at which each gate decides: 0, R, 2R, ..."""
        return [g * self.layers_per_gate for g in range(self.num_gates)]

    @property
    def probe_inputs(self) -> int:
        """What the probe adds to a gate's input: C probabilities and the entropy (0 without a probe)."""
        return self.probe_labels + 1 if self.probe_labels else 0

    def to_json(self) -> dict[str, Any]:
        return {"num_gates": self.num_gates, "num_layers": self.num_layers,
                "gate_setting": list(self.gate_setting), "class_widths": list(self.class_widths),
                "probe_labels": self.probe_labels}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GateSettings":
        """The settings ``to_json`` wrote; files from before the probe existed have none."""
        return cls(int(data["num_gates"]), int(data["num_layers"]), tuple(float(w) for w in data["gate_setting"]),
                   tuple(float(w) for w in data["class_widths"]), int(data.get("probe_labels", 0)))


def gate_macs(settings: GateSettings, hidden: int, length: int, pooling: str, layers_run: int = 0) -> int:
    """MACs the gates add to one ``length``-token input: each gate's MLP ((H + P)·H + H·K, P the probe's
    inputs), its probe (H·H + H·C, with one) and what it reads -- gate 0 the masked mean of the embeddings
    (T·H), later gates the model's pooled vector (T·H for mean pooling, nothing for [CLS]).  With
    ``layers_run`` > 0 only the gates that decide before one of those layers ran (an input that left
    early, or a shallower route, skips the rest)."""
    ran = [s for s in settings.gate_steps() if not layers_run or s < layers_run]
    probe = hidden * hidden + hidden * settings.probe_labels if settings.probe_labels else 0
    mlp = (hidden + settings.probe_inputs) * hidden + hidden * settings.num_classes + probe
    reads = sum(length * hidden if s == 0 or pooling == "mean" else 0 for s in ran)
    return len(ran) * mlp + reads


def choose_classes(logits: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
    """[n] the class each row's gate picks from its logits [n, K] (classes ordered narrow -> wide).

    ``threshold`` None: the argmax (the reference's rule).  Otherwise the narrowest class k whose
    cumulative softmax P(target <= k) reaches ``threshold`` ("is width k enough?" scored for every
    class boundary at once), the widest when none does.  Why: trained under balanced class weights
    the argmax is a calibration the gates do not have, while the order of their scores is what they
    learned; a threshold swept by --stage search turns that order into a cost knob, as exit
    thresholds do for off-ramps -- higher thresholds never choose a narrower class.
    """
    logits = np.asarray(logits, dtype="float64")
    if threshold is None:
        return logits.argmax(axis=-1)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)[:, :-1]
    enough = cumulative >= threshold
    return np.where(enough.any(axis=-1), enough.argmax(axis=-1), logits.shape[-1] - 1)


@dataclass(frozen=True)
class RouteCosts:
    """MACs of one ``length``-token input under gated routes, in the parts a gate's choice moves:
    ``fixed`` (the gates' MLPs and reads, pooling, pooler, classifier: paid whatever the gates
    choose), ``block[k]`` (one gate's block of layers at class k's width) and ``full`` (the full
    model, what shares are of).  A route with gate g choosing class c_g costs
    ``fixed + Σ_g block[c_g]`` -- exactly ``accounting.route_macs`` plus :func:`gate_macs`
    for a route without exits, which a test checks."""

    fixed: int
    block: tuple[int, ...]
    full: int


def route_costs(config, settings: GateSettings, length: int) -> RouteCosts:
    """The :class:`RouteCosts` of a ``length``-token input for a model with ``config`` (a BertConfig)
    and these gates (class k runs at ``settings.class_widths[k]``).

    Why: route-trained gates (``--gate_training routes``) pay for the MACs their choices cost;
    the penalty is a sum of these numbers weighted by the gates' straight-through choices.
    """
    from ofa_flexbert.engine.accounting import layer_macs, route_macs
    from ofa_flexbert.engine.routes import Route, config_width

    def layer(width) -> int:
        parts = layer_macs(config.hidden_size, width.heads, width.head_dim, width.ffn, length)
        return parts["linear"] + parts["attention"]

    full_route = Route.uniform(config)
    full = route_macs(config, full_route, length)
    encoder = sum(layer(width) for _, width in full_route.executed)
    pooling = getattr(config, "pooling", None) or "cls"
    fixed = full - encoder + gate_macs(settings, config.hidden_size, length, pooling)
    block = tuple(settings.layers_per_gate * layer(config_width(config, w)) for w in settings.class_widths)
    return RouteCosts(fixed, block, full)
