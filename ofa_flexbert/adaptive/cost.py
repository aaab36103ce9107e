"""What one input costs on a dynamic route: its layers and head, the gates and the exit checks it ran (pure).

Why here and pure: ``--stage infer``, the search, and the dynamic predictors (per-layer and segment
exports, which load no trained model) count an input's MACs the same way, from its route and length.
"""
from __future__ import annotations

from typing import Optional, Sequence

from gate.settings import GateSettings, gate_macs
from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.routes import Route


def exit_check_macs(ramp_layers: Sequence[int], num_labels: int, hidden: int, length: int, pooling: str,
                    layers_run: int, route_layers: int, exited: bool) -> int:
    """MACs of the exit checks one input ran: at every off-ramp (after 0-based ``ramp_layers``) it reached
    before its route's last layer, the pooled vector (T·H with mean pooling), the off-ramp's pooler (H·H)
    and classifier (H·C).  The check at the layer an input left after is its answer, counted once, as the
    exit head of its route (:func:`accounting.route_macs`)."""
    checks = [layer + 1 for layer in ramp_layers if layer + 1 <= layers_run and layer + 1 < route_layers
              and not (exited and layer + 1 == layers_run)]
    per_check = (length * hidden if pooling == "mean" else 0) + hidden * hidden + hidden * num_labels
    return len(checks) * per_check


def dynamic_macs(config, route: Route, length: int, pooling: str, gates: Optional[GateSettings] = None,
                 ramp_layers: Optional[Sequence[int]] = None) -> int:
    """Everything one ``length``-token input ran on ``route``: layers and head, then the gates (``gates``:
    when they run) and the exit checks (``ramp_layers``: when inputs may exit)."""
    run = len(route.executed)
    total = route_macs(config, route, length)
    if gates is not None:
        total += gate_macs(gates, config.hidden_size, length, pooling, run)
    if ramp_layers is not None:
        total += exit_check_macs(ramp_layers, config.num_labels, config.hidden_size, length, pooling, run,
                                 len(route.layers), route.exit_after is not None)
    return total
