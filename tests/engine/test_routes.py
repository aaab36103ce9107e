"""The pure rules (ofa_flexbert/engine/routes.py): widths, depths, subnets and routes, without paddle."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from ofa_flexbert.engine.routes import (DEPTH_RULES, Route, Width, depth_for, depth_layers, heads_width, subnet_tag,
                                 width_for)

MINILM = SimpleNamespace(num_hidden_layers=6, num_attention_heads=12, hidden_size=384, intermediate_size=1536)


# The pure rules: what a subnet, route, cost or inference setting is, and the task table -- importable
# (and testable, and usable by a serving process) without paddle, paddleslim or paddlenlp.
PURE_MODULES = ("ofa_flexbert.engine.routes", "ofa_flexbert.engine.accounting", "ofa_flexbert.adaptive.tradeoff",
                "ofa_flexbert.adaptive.setting", "ofa_flexbert.adaptive.cost", "ofa_flexbert.adaptive.latency",
                "ofa_flexbert.deploy.layout",
                "ofa_flexbert.deploy.grouping", "ofa_flexbert.deploy.segments",
                "ofa_flexbert.glue.tasks", "ofa_flexbert.config", "gate.settings")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_rules_import_no_framework(module):
    probe = (f"import sys; import {module}; "
             "print(sorted(m for m in ('paddle', 'paddleslim', 'paddlenlp') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.strip() == "[]"


def test_ffn_share_is_integer_arithmetic():
    """11 of 15 heads with F = 1200 keep 880 neurons; the reference's int(11 / 15 * 1200) gives 879."""
    assert int(11 / 15 * 1200) == 879  # the float rule's error, for the record
    assert width_for(11 / 15, 15, 64, 1200) == Width(11, 64, 880)
    assert heads_width(11, 15, 64, 1200).ffn == 880
    assert all(heads_width(h, 15, 64, 1200).ffn == h * 1200 // 15 for h in range(1, 16))
    with pytest.raises(ValueError, match=r"heads must be in 1\.\.15, got 16"):
        heads_width(16, 15, 64, 1200)


@pytest.mark.parametrize("layers, depth, rule, expected", [
    # Flexible-BERT's prefix (docs/reference.md, Depth rule)
    (12, 0.5, "prefix", [0, 1, 2, 3, 4, 5]),
    (12, 0.75, "prefix", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    (6, 0.5, "prefix", [0, 1, 2]),
    (6, 0.75, "prefix", [0, 1, 2, 3]),  # 4.5 rounds to even
    # PaddleNLP's variant: floor((i+1)/d) - 1 (docs/reference.md, Elastic depth in OFA)
    (12, 0.5, "every_other", [1, 3, 5, 7, 9, 11]),
    (12, 0.75, "every_other", [0, 1, 3, 4, 5, 7, 8, 9, 11]),
    (6, 0.5, "every_other", [1, 3, 5]),
    (6, 0.75, "every_other", [0, 1, 3, 4]),
    # DynaBERT's own code: floor(i/d)
    (12, 0.5, "dynabert", [0, 2, 4, 6, 8, 10]),
    (12, 0.75, "dynabert", [0, 1, 2, 4, 5, 6, 8, 9, 10]),
    (6, 0.5, "dynabert", [0, 2, 4]),
    (6, 0.75, "dynabert", [0, 1, 2, 4]),
])
def test_depth_rules(layers, depth, rule, expected):
    assert depth_layers(layers, depth, rule) == expected


def test_every_rule_keeps_all_layers_at_full_depth_and_never_runs_past_the_last():
    assert [depth_for(12, d) for d in (0.5, 0.75, 1.0, 0.55)] == [6, 9, 12, 7]
    for rule in DEPTH_RULES:
        assert depth_layers(6, 1.0, rule) == list(range(6))
        assert depth_layers(6, 0.1, rule) in ([0], [5])  # never empty
    assert depth_layers(6, 0.1, "every_other") == [5]
    with pytest.raises(ValueError, match="unknown depth rule 'odd'"):
        depth_layers(6, 0.5, "odd")


def test_a_uniform_subnet_is_a_route():
    route = Route.uniform(MINILM, 0.5, 0.5)
    assert route.layers == (0, 1, 2) and route.widths == (Width(6, 32, 768),) * 3
    assert route.executed == ((0, Width(6, 32, 768)), (1, Width(6, 32, 768)), (2, Width(6, 32, 768)))
    assert Route.uniform(MINILM, 1.0, 0.5, "dynabert").layers == (0, 2, 4)


def test_a_route_with_per_layer_widths_and_an_exit():
    widths = tuple(heads_width(h, 12, 32, 1536) for h in (12, 6, 3, 12))
    route = Route((0, 1, 2, 3), widths, exit_after=2)
    assert [(layer, w.heads, w.ffn) for layer, w in route.executed] == [(0, 12, 1536), (1, 6, 768)]
    with pytest.raises(ValueError, match="a route needs one width per layer: 4 layers, 3 widths"):
        Route((0, 1, 2, 3), widths[:3])
    with pytest.raises(ValueError, match=r"exit_after must be in 1\.\.4, got 5"):
        Route((0, 1, 2, 3), widths, exit_after=5)


def test_subnet_tags_name_grid_points():
    assert subnet_tag(0.25, 0.5) == "w0.25_d0.5" and subnet_tag(1.0, 1.0) == "w1_d1"


def test_route_macs_count_each_executed_layer_at_its_width_and_the_head_at_the_exit():
    from ofa_flexbert.engine.accounting import layer_macs, route_macs, subnet_macs

    config = SimpleNamespace(**vars(MINILM), num_labels=2)
    widths = tuple(heads_width(h, 12, 32, 1536) for h in (12, 6, 3, 12))
    route = Route((0, 1, 2, 3), widths, exit_after=3)
    T, H = 50, 384

    def layer(heads):
        counted = layer_macs(H, heads, 32, heads * 1536 // 12, T)
        return counted["linear"] + counted["attention"]

    head = H * H + H * 2  # pooler and classifier, once, at the exit
    assert route_macs(config, route, T) == layer(12) + layer(6) + layer(3) + head  # layer 3 never runs
    assert route_macs(config, Route((0, 1, 2, 3), widths), T) == layer(12) + layer(6) + layer(3) + layer(12) + head
    assert subnet_macs(config, 0.5, 0.5, T) == 3 * layer(6) + head  # a uniform subnet is a route
