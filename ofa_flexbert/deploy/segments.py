"""Where a dynamic setting's decisions cut its route into segments (pure, no framework).

Why segments: a per-layer dynamic export pays one runtime call per (layer, batch group), and runs
its gates and exit heads in dygraph between them -- more time than the layers it saves
(docs/benchmarks.md, "The dynamic predictor against static subnets").  Between two decisions
nothing changes for a row, so the layers there can be one graph, and the decision at its end (the
next gate's logits, the off-ramp's logits, or the final head's) can be computed inside it.

A decision point is a step (layers run so far) at which a gate decides (``GateSettings.gate_steps``)
or an off-ramp checks (its layer + 1), strictly between 0 and the route's length: the gate at step 0
reads the embeddings (the embedding graph computes it), and at the route's end the final head
answers.  The exit check runs before the gate at the same step, as the engine's hooks do
(``gate.ramps.chain``), so a row that leaves there takes no width decision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class Segment:
    """Steps ``[start, end)`` of the route (encoder ``layers``), and what is decided after them:
    the off-ramp ``ramp`` checks (its index), then gate ``gate`` picks the next width; ``last``: the
    route ends here and the final head answers."""

    start: int
    end: int
    layers: tuple[int, ...]
    ramp: Optional[int] = None
    gate: Optional[int] = None
    last: bool = False

    def outputs(self, gated: bool, exits: bool) -> tuple[str, ...]:
        """What its graph returns after the hidden states (``layout.SEGMENT_OUTPUTS``' order): the next gate's
        logits when gates run, the off-ramp's when inputs exit, the final head's at the route's end."""
        return tuple(name for name, present in (("gate", gated and self.gate is not None),
                                                ("ramp", exits and self.ramp is not None),
                                                ("final", self.last)) if present)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "layers": list(self.layers), "ramp": self.ramp,
                "gate": self.gate, "last": self.last}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Segment":
        return cls(int(data["start"]), int(data["end"]), tuple(int(x) for x in data["layers"]), data.get("ramp"),
                   data.get("gate"), bool(data.get("last", False)))


def cut_route(route_layers: Sequence[int], gate_steps: Sequence[int] = (), ramp_steps: Sequence[int] = ()) -> list[Segment]:
    """The segments of a route running ``route_layers`` in order, cut at every decision point.

    ``gate_steps``: the step at which gate g decides (empty when no gates run); ``ramp_steps``: the
    step at which off-ramp i checks (empty when inputs do not exit)."""
    n = len(route_layers)
    if n == 0:
        raise ValueError("a route needs at least one layer")
    cuts = sorted({s for s in (*gate_steps, *ramp_steps) if 0 < s < n} | {n})
    segments, start = [], 0
    for end in cuts:
        segments.append(Segment(start, end, tuple(route_layers[start:end]),
                                ramp=list(ramp_steps).index(end) if end in ramp_steps and end < n else None,
                                gate=list(gate_steps).index(end) if end in gate_steps and end < n else None,
                                last=end == n))
        start = end
    return segments


def plan_segments(route_layers: Sequence[int], gated: bool, exits: bool, gate_steps: Sequence[int],
                  ramp_layers: Sequence[int]) -> list[Segment]:
    """The segments of a setting: cut at its gates' steps when it is gated, and after its off-ramps'
    (0-based) layers when inputs exit -- what the export writes and the latency model prices."""
    return cut_route(route_layers, gate_steps if gated else (), [layer + 1 for layer in ramp_layers] if exits else ())


def segment_widths(class_widths: Sequence[float], start_width: float, gated: bool) -> list[float]:
    """The width multipliers a segment can run at: the gates' class widths when they decide at step 0
    (every row's first width is a gate's choice), else the one width the route starts at."""
    return sorted(set(class_widths)) if gated else [start_width]
