"""--stage profile and the latency model against what the exported graphs really do (toy models)."""
import json

import numpy as np
import pytest

from conftest import fresh_python, stage_argv
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")

# oneDNN: at one fixed shape its table composes as the reference kernels' does (what it misses is the cost
# of changing shapes, docs/benchmarks.md).
# Layer probes at 2 and 4 of the toy's 4 layers, not at the searched 3 (configs/demo.yaml): the search says so.
DEPTHS = ["--depth_mult_list", "0.5,1"]
PROFILE = ["--profile_batch_sizes", "1,4,16", "--profile_lengths", "8,16,32", "--profile_repeats", "9",
           "--num_threads", "1", "--onednn", "on", *DEPTHS]


# Three exit (and cascade) thresholds instead of the default 40: what these tests check does not depend on
# how many are tried, and each costs a replay of every exiting plan and of ~300 cascade chains.
FEW_THRESHOLDS = ["--exit_thresholds", "0.2,0.4,0.6"]


@pytest.fixture(scope="module")
def cost_table(toy_gated, tmp_path_factory):
    """--stage profile of the toy gated model: (its folder, the table)."""
    from ofa_flexbert.adaptive.latency import read_cost_table

    data_dir, _, gates = toy_gated
    out = tmp_path_factory.mktemp("profile") / "prof"
    assert main(stage_argv("profile", data_dir, gates, out, *PROFILE)) == 0
    return out, read_cost_table(str(out))


def timed_in_fresh_process(export, rows: int, span: int) -> float:
    """Median ms of a static export at one shape, in a process of its own (as a predictor runs: the test
    process has just trained and exported, which leaves paddle's state and memory as no server's): the
    middle one of three blocks' medians of 31 calls, so that one slow spell on a shared machine is dropped."""
    probe = ("import time, numpy as np\n"
             "import patches\n"
             "from ofa_flexbert.deploy.runtime import StaticGraph\n"
             f"g = StaticGraph({str(export)!r}, num_threads=1, onednn=True)\n"
             f"ids = np.random.default_rng(0).integers(1, 20, size=({rows}, {span})).astype('int64')\n"
             "types = np.zeros_like(ids)\n"
             "for _ in range(3): g(ids, types)\n"
             "blocks = []\n"
             "for _ in range(3):\n"
             "    times = []\n"
             "    for _ in range(31):\n"
             "        t = time.perf_counter(); g(ids, types); times.append((time.perf_counter() - t) * 1000)\n"
             "    blocks.append(float(np.median(times)))\n"
             "print(sorted(blocks)[1])\n")
    return float(fresh_python(probe))


@pytest.mark.slow
def test_the_table_prices_a_static_export_within_a_factor_of_its_direct_timing(toy_gated, cost_table, tmp_path):
    """Probes for every --width_mult_list width (the toy's 4 heads: 1..4), whole (4 layers) and at each
    shallower --depth_mult_list depth (0.5: 2 layers), 9 shapes each; a static w0.5
    subnet exported and timed directly at batch 4 x 16 tokens (in a fresh process) is within a factor of 3
    of the table's prediction either way: a sanity check that the profile measures what an export costs
    (measured ratios: 0.88-1.04 on a quiet machine, up to 1.9 with a training run on the other core).
    Loose on purpose: the toy's graphs take a millisecond or two, where a shared machine's noise is of
    that order; the composition itself is tested in closed form (tests/adaptive/test_latency.py) and its
    error on MiniLM measured by bench/latency_model.py (docs/benchmarks.md)."""
    from ofa_flexbert.adaptive.latency import CALL, EMBEDDINGS, HEAD, ChainShape, group_ids, per_input_ms

    data_dir, _, gates = toy_gated
    folder, table = cost_table
    assert table.probes == {CALL, EMBEDDINGS, HEAD} | {f"layer_h{h}{d}" for h in range(1, 5) for d in ("", "_l2")}
    assert {name: table.probe_layers(name) for name in table.probes if name.startswith("layer_h2")} == {
        "layer_h2": 4, "layer_h2_l2": 2}
    assert all(len(points) == 9 for points in table.points.values())
    assert table.meta["num_threads"] == 1 and table.meta["onednn"] is True and table.meta["hidden_size"] == 64
    out = tmp_path / "export"
    assert main(stage_argv("export", data_dir, gates, out, "--width_mult", "0.5", "--depth_mult", "1")) == 0
    measured = timed_in_fresh_process(out / "w0.5_d1", rows=4, span=16)
    layers = len(json.loads((out / "w0.5_d1" / "manifest.json").read_text())["layers"])
    assert layers == table.meta["probe_layers"]["layer_h2"] == table.meta["num_layers"]
    predicted = per_input_ms(table, ChainShape(((2, layers),), np.zeros(4, dtype="int64")),
                             group_ids([[0, 1, 2, 3]], 4), np.full(4, 16)) * 4
    print(f"static w0.5: measured {measured:.3f} ms, predicted {predicted:.3f} ms")
    assert 1 / 3 <= measured / predicted <= 3, (measured, predicted)


@pytest.mark.slow
def test_the_segment_calls_the_model_predicts_are_the_calls_the_segment_predictor_makes(toy_gated, cost_table,
                                                                                        tmp_path):
    """wd-dynamic exported as segments, a batch of 7 dev inputs: the calls ``SegmentShape`` derives from the
    routes the predictor took are the predictor's own (segment by segment: heads and rows)."""
    from ofa_flexbert.adaptive.latency import group_ids, segment_shape
    from ofa_flexbert.deploy.predictor import Predictor
    from ofa_flexbert.deploy.segments import Segment
    from ofa_flexbert.glue.data import get_task, read_split

    data_dir, _, gates = toy_gated
    config = tmp_path / "wd.json"
    config.write_text(json.dumps({"sst-2": {"mode": "wd_dynamic", "width_mult_list": [0.25, 0.5, 0.75, 1.0],
                                            "early_exit": True, "exit_threshold": 0.5}}))
    out = tmp_path / "export"
    assert main(stage_argv("export", data_dir, gates, out, "--inference_config", str(config))) == 0
    predictor = Predictor(str(out / "wd_dynamic"), batch_size=7)
    texts = [ex.text_a for ex in read_split(get_task("sst-2"), data_dir, "dev")]
    segment_runner = predictor.dynamic
    segments = segment_runner.segments
    seen = 0
    assert isinstance(segments[0], Segment)
    for start in range(0, 70, 7):
        ids, types = predictor.pad(predictor.encode(texts[start:start + 7]))
        _, routes = segment_runner.run(ids, types)
        lengths = (ids != segment_runner.pad_token_id).sum(axis=1)
        runs = np.array([next(j for j, s in enumerate(segments) if s.end == len(r.executed)) + 1 for r in routes])
        shape = segment_shape(segments, routes, np.array([len(r.executed) for r in routes]), True, True)
        assert shape.runs.tolist() == runs.tolist()
        calls = shape.calls(group_ids([list(range(len(routes)))], len(routes)), lengths).as_tuples()
        assert calls[0][5:] == (True, -1) and calls[0][3] == len(routes)  # the embeddings' graph, gate 0 inside
        assert sorted((index, heads, rows) for heads, _, _, rows, _, _, index in calls[1:]) == sorted(segment_runner.calls)
        seen += len(set(runs.tolist())) > 1
    assert seen > 0  # some batch had rows leaving early


@pytest.mark.slow
def test_search_ranks_by_predicted_latency_and_chooses_under_a_latency_budget(toy_gated, cost_table, tmp_path,
                                                                             caplog):
    """--cost latency: every row has predicted milliseconds per input and their share of the full model's; the
    static full model's share is 1; the written setting is the best on the search half with a predicted share
    at most the budget, and fronts are drawn on latency.  The searched depth the table has no probe of (the
    toy's 3 of 4 layers: profiled at 0.5 and 1) is named in one warning."""
    data_dir, _, gates = toy_gated
    folder, _ = cost_table
    out = tmp_path / "search"
    assert main(stage_argv("search", data_dir, gates, out, "--cost", "latency", "--cost_table", str(folder),
                           "--latency_budget", "0.6", "--latency_batch_size", "8", *FEW_THRESHOLDS)) == 0
    results = json.loads((out / "search_results.json").read_text())
    rows = results["points"]
    assert all("latency_ms" in r["search"] and "latency_share" in r["held_out"] for r in rows)
    full = [r for r in rows if r["mode"] == "static" and r["width_mult_list"] == [1.0] and r["depth_mult"] == 1.0]
    assert full[0]["dev"]["latency_share"] == pytest.approx(1.0)
    fits = [r for r in rows if r["search"]["latency_share"] <= 0.6]
    best = max(fits, key=lambda r: (r["search"]["metric"], -r["search"]["latency_share"]))
    chosen = rows[results["best"]]
    assert chosen["search"]["latency_share"] <= 0.6 and chosen["search"]["metric"] == best["search"]["metric"]
    assert results["cost"] == "latency" and results["latency_batch_size"] == 8
    assert [r.getMessage() for r in caplog.records if "no layer probes" in r.getMessage()] == [
        f"search: --cost_table {folder} has no layer probes of 3 layers: those subnets are priced from the probes "
        "around them (profile with this --depth_mult_list for their own; docs/design.md, the latency model)"]


@pytest.fixture(scope="module")
def int8_cost_table(toy_gated, tmp_path_factory):
    """--stage profile --quantize int8 of the toy gated model on a small grid: (its folder, the table)."""
    from ofa_flexbert.adaptive.latency import read_cost_table

    data_dir, _, gates = toy_gated
    out = tmp_path_factory.mktemp("profile") / "prof-int8"
    assert main(stage_argv("profile", data_dir, gates, out, "--profile_batch_sizes", "1,4", "--profile_lengths",
                           "8,16", "--profile_repeats", "3", "--num_threads", "1", "--quantize", "int8", *DEPTHS)) == 0
    return out, read_cost_table(str(out))


@pytest.mark.slow
def test_an_int8_profile_times_the_quantized_probes_on_onnxruntime(cost_table, int8_cost_table):
    """The same probes as the float table's, on a 2 x 2 grid, recorded as INT8 onnxruntime timings (no oneDNN)."""
    (_, table), (_, int8) = cost_table, int8_cost_table
    assert int8.probes == table.probes and all(len(points) == 4 for points in int8.points.values())
    assert (int8.meta["runtime"], int8.meta["quantize"], int8.meta["onednn"]) == ("onnxruntime", "int8", False)
    assert (table.meta["runtime"], table.meta["quantize"]) == ("paddle_inference", "none")


@pytest.mark.slow
def test_search_places_int8_subnets_priced_by_their_table_and_export_writes_the_chosen_form(
        toy_gated, cost_table, int8_cost_table, tmp_path, capsys):
    """--quantize int8: every static subnet gets an INT8 twin (same widths, depth and MACs) priced from
    --int8_cost_table; its metric is the INT8 graph's own: the w0.5 twin's dev metric equals the INT8 check
    of ``--stage export`` run on an --inference_config naming that INT8 setting (which exports it as INT8).
    Pricing: with a copy of the float table passed as the INT8 one, each twin costs exactly what its float
    subnet costs (the same calls, from the table it was given).  A float table given as the INT8 one is refused."""
    data_dir, _, gates = toy_gated
    folder, _ = cost_table
    as_int8 = tmp_path / "float-as-int8"
    as_int8.mkdir()
    data = json.loads((folder / "cost_table.json").read_text())
    data["meta"]["quantize"] = "int8"
    (as_int8 / "cost_table.json").write_text(json.dumps(data))
    out = tmp_path / "search"
    latency = ["--cost", "latency", "--cost_table", str(folder), "--latency_batch_size", "4", "--quantize", "int8",
               *FEW_THRESHOLDS]
    assert main(stage_argv("search", data_dir, gates, out, *latency, "--int8_cost_table", str(as_int8))) == 0
    rows = json.loads((out / "search_results.json").read_text())["points"]
    floats = {(tuple(r["width_mult_list"]), r["depth_mult"]): r for r in rows if r["mode"] == "static"
              and "quantize" not in r}
    twins = [r for r in rows if r.get("quantize") == "int8"]
    assert len(floats) == 12 and len(twins) == 12 and all(r["mode"] == "static" for r in twins)
    for r in twins:
        twin = floats[(tuple(r["width_mult_list"]), r["depth_mult"])]
        assert r["dev"]["macs"] == twin["dev"]["macs"] and r["dev"]["latency_ms"] == twin["dev"]["latency_ms"]
    assert any(r["mode_front"] for r in twins)  # a family of its own: its front is drawn and logged
    config = tmp_path / "int8.json"
    config.write_text(json.dumps({"sst-2": {**{k: floats[((0.5,), 1.0)][k] for k in ("mode", "width_mult_list",
                                                                                    "depth_mult")}, "quantize": "int8"}}))
    export = tmp_path / "export"
    assert main(stage_argv("export", data_dir, gates, export, "--inference_config", str(config))) == 0
    manifest = json.loads((export / "w0.5_d1_int8" / "manifest.json").read_text())
    chosen = next(r for r in twins if r["width_mult_list"] == [0.5] and r["depth_mult"] == 1.0)
    assert chosen["dev"]["metric"] == manifest["check"]["int8_metric"]
    capsys.readouterr()
    assert main(stage_argv("search", data_dir, gates, tmp_path / "refused", *latency, "--int8_cost_table",
                           str(folder))) == 2
    assert capsys.readouterr().err.strip() == (f"error: --int8_cost_table {folder}: profiled without --quantize int8; "
                                               "--int8_cost_table takes an INT8 table (--stage profile --quantize int8)")
    data["meta"]["num_threads"] = 2
    (as_int8 / "cost_table.json").write_text(json.dumps(data))
    assert main(stage_argv("search", data_dir, gates, tmp_path / "refused2", *latency, "--int8_cost_table",
                           str(as_int8))) == 2
    assert capsys.readouterr().err.strip() == (f"error: --int8_cost_table {as_int8}: profiled with another thread "
                                               f"count (2) than --cost_table {folder} (1); profile both alike")


@pytest.mark.parametrize("flags, message", [
    (["--cost", "latency"], "error: --cost latency: needs --cost_table (the cost_table.json written by --stage profile)"),
    (["--cost", "time"], "error: --cost: expected one of macs, latency, got 'time'"),
    (["--latency_budget", "2"], "error: --latency_budget: a share must be in (0, 1], got '2'"),
    (["--profile_lengths", "0"], "error: --profile_lengths: needs positive integers, got 0"),
    (["--runtime", "tpu"], "error: --runtime: expected one of paddle, onnx, got 'tpu'"),
    (["--quantize", "int8"], "error: --quantize int8: the search prices INT8 subnets by time, not MACs (they have "
     "their float twins' MACs); give --cost latency, --cost_table and --int8_cost_table (--stage profile --quantize int8)"),
    (["--int8_cost_table", "t"], "error: --int8_cost_table: prices the INT8 subnets that only --quantize int8 adds to "
     "the search"),
])
def test_bad_latency_flags_get_one_line(tmp_path, capsys, flags, message):
    assert main(["--task", "sst-2", "--stage", "search", "--model_dir", str(tmp_path), "--output_dir",
                 str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()
