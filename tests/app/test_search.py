"""--stage search: the pure rules (maps, exits, halves, fronts) and the stage against --stage infer."""
import json
from math import comb

import numpy as np
import pytest

from conftest import stage_argv
from ofa_flexbert.adaptive.tradeoff import (best_under_budget, default_thresholds, exit_steps, pareto_front, split_halves,
                                   width_maps)
from ofa_flexbert.adaptive.setting import entry_of
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")


@pytest.mark.parametrize("m,k", [(4, 4), (3, 2), (5, 3)])
def test_width_maps_are_the_non_constant_non_decreasing_maps(m, k):
    candidates = [0.25 * (i + 1) for i in range(m)]
    maps = width_maps(list(reversed(candidates)), k)
    assert len(maps) == comb(m + k - 1, k) - m == len(set(maps))
    assert all(list(x) == sorted(x) and len(set(x)) > 1 and set(x) <= set(candidates) for x in maps)


def test_an_input_leaves_at_the_first_off_ramp_strictly_below_the_threshold():
    entropies = np.array([[0.1, 0.0], [0.5, 0.2], [0.3, 0.3], [0.6, 0.7]])
    assert exit_steps(entropies, 0.3).tolist() == [0, 1, -1, -1]  # 0.3 is not below 0.3
    assert exit_steps(entropies, 0.05).tolist() == [1, -1, -1, -1]
    assert default_thresholds(2, False, 4) == pytest.approx([np.log(2) * k / 4 for k in (1, 2, 3, 4)], abs=1e-6)
    assert default_thresholds(3, True, 2) == [0.5, 1.0]


def test_dev_halves_are_disjoint_cover_dev_and_keep_its_class_balance():
    labels = np.array([0] * 30 + [1] * 11 + [2] * 4)
    search, held = split_halves(labels, seed=3, stratify=True)
    assert sorted(search.tolist() + held.tolist()) == list(range(45))
    assert [int((labels[search] == c).sum()) for c in range(3)] == [15, 5, 2]
    again, _ = split_halves(labels, seed=3, stratify=True)
    other, _ = split_halves(labels, seed=4, stratify=True)
    assert again.tolist() == search.tolist() != other.tolist()


def test_the_pareto_front_keeps_exactly_the_settings_nothing_beats():
    costs = [0.5, 0.3, 0.3, 0.8, 0.9, 0.3, 1.0]
    values = [0.80, 0.70, 0.75, 0.79, 0.85, 0.75, 0.85]
    assert pareto_front(costs, values) == [2, 0, 4]  # 5 duplicates 2; 6 costs more for the same 0.85
    brute = [i for i in range(len(costs)) if not any(
        costs[j] <= costs[i] and values[j] >= values[i] and (costs[j], values[j]) != (costs[i], values[i])
        for j in range(len(costs)))]
    assert set(pareto_front(costs, values)) == set(brute) - {5}
    assert best_under_budget(costs, values, 0.6) == 0 and best_under_budget(costs, values, 0.31) == 2
    assert best_under_budget(costs, values, 0.2) is None


@pytest.mark.slow
def test_search_writes_a_front_whose_chosen_setting_infer_reproduces(toy_gated, tmp_path):
    """The setting search writes, run by --stage infer on dev, gives the metric and MACs search reported
    for it: the replayed thresholds are the exit check's own rule."""
    data_dir, _, gates = toy_gated
    out = tmp_path / "search"
    assert main(stage_argv("search", data_dir, gates, out, "--width_mult_list", "0.5,1", "--depth_mult_list",
                           "0.5,1", "--exit_thresholds", "0.05,0.3,0.6", "--gate_thresholds", "0.2,0.6",
                           "--macs_budget", "0.8")) == 0
    results = json.loads((out / "search_results.json").read_text())
    rows = results["points"]
    modes = [r["mode"] for r in rows]
    assert modes.count("static") == 4 and modes.count("d_dynamic") == 2 * 3
    # argmax gates on every map (3), ranked gates on their own classes at each gate threshold (2)
    assert modes.count("w_dynamic") == len(width_maps([0.5, 1], 4)) + 2 == 5 and modes.count("wd_dynamic") == 5 * 3
    ranked = [r for r in rows if r.get("gate_threshold") is not None]
    assert sorted({r["gate_threshold"] for r in ranked}) == [0.2, 0.6]
    assert all(r["width_mult_list"] == [0.25, 0.5, 0.75, 1.0] for r in ranked)
    # perfect gates ('agree' targets, the default) give every input the widest full-depth width's answer
    statics = [r for r in rows if r["mode"] == "static" and r["depth_mult"] == 1.0]
    widest = max(statics, key=lambda r: r["width_mult_list"][0])
    assert results["oracle"]["gate_target"] == "agree"
    assert results["oracle"]["dev"]["metric"] == pytest.approx(widest["dev"]["metric"], abs=1e-12)
    assert results["oracle"]["dev"]["macs"] <= max(r["dev"]["macs"] for r in statics)
    cascades = [r for r in rows if r["mode"] == "cascade"]  # only the cascade family's front is kept
    assert cascades and all(r["mode_front"] for r in cascades)
    assert all(len(r["cascade_thresholds"]) == len(r["width_mult_list"]) - 1 for r in cascades)
    assert results["parts"]["search"] + results["parts"]["held_out"] == results["parts"]["dev"]
    chosen = rows[results["best"]]
    assert chosen["search"]["macs_share"] <= 0.8 and chosen["front"]
    assert all(r["search"]["metric"] <= chosen["search"]["metric"] for r in rows if r["search"]["macs_share"] <= 0.8)
    config = json.loads((out / "inference_config.json").read_text())
    assert config == {"sst-2": entry_of(chosen)}
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best_cascade = max(cascades, key=lambda r: (r["dev"]["metric"], -r["dev"]["macs"]))
    for i, row in enumerate([chosen, best_cascade]
                            + [r for r in rows if r["mode"] == "wd_dynamic" and r["exit_threshold"] == 0.3][:1]
                            + [r for r in ranked if r["mode"] == "wd_dynamic" and r["exit_threshold"] == 0.3][:1]):
        path = tmp_path / f"config{i}.json"
        path.write_text(json.dumps({"sst-2": entry_of(row)}))
        assert main(stage_argv("infer", data_dir, gates, tmp_path / f"infer{i}", "--inference_config", str(path))) == 0
        summary = json.loads((tmp_path / f"infer{i}" / "infer_results.json").read_text())
        assert summary["metrics"] == pytest.approx(row["dev"]["metrics"], abs=1e-12)
        assert summary["macs"] == pytest.approx(row["dev"]["macs"], rel=1e-12)
        assert summary["mean_layers"] == pytest.approx(row["dev"]["mean_layers"])


@pytest.mark.parametrize("flags,message", [
    (("--macs_budget", "0"), "--macs_budget: a share of the full model's MACs, in (0, 1], got 0"),
    (("--macs_budget", "1.5"), "--macs_budget: a share of the full model's MACs, in (0, 1], got 1.5"),
    (("--gate_thresholds", "0.5,1.2"), "--gate_thresholds: a cumulative probability in (0, 1], got 1.2"),
    (("--exit_thresholds", "0.1,-0.2"), "--exit_thresholds: each must be positive (an input leaves when its entropy "
                                        "is below it), got 0.1,-0.2"),
])
def test_bad_search_flags_get_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    assert main(["--task", "sst-2", "--stage", "search", "--model_dir", str(tmp_path / "m"),
                 "--output_dir", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_the_static_frontier_is_the_upper_convex_hull_and_flat_past_its_best():
    from ofa_flexbert.adaptive.tradeoff import hull_value, upper_hull

    costs = [0.25, 0.5, 0.33, 1.0, 0.75, 0.5]
    values = [0.80, 0.86, 0.81, 0.85, 0.87, 0.84]
    # (0.33, 0.81) lies below the segment from (0.25, 0.80) to (0.5, 0.86): a mix of those two beats it
    assert upper_hull(costs, values) == [(0.25, 0.80), (0.5, 0.86), (0.75, 0.87)]
    hull = upper_hull(costs, values)
    assert hull_value(hull, 0.2) is None
    assert hull_value(hull, 0.375) == pytest.approx(0.83)
    assert hull_value(hull, 0.9) == pytest.approx(0.87)  # (1.0, 0.85) is worse than a cheaper subnet
