"""--stage infer: the four modes, batch-size independence, honest per-input cost, the reference's command lines."""
import json
import os

import numpy as np
import pytest

from conftest import stage_argv
from ofa_flexbert.engine.accounting import subnet_macs
from ofa_flexbert.store.models import load_model
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")


def infer(data_dir, model_dir, out, *flags):
    assert main(stage_argv("infer", data_dir, model_dir, out, *flags)) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return json.loads((out / "infer_results.json").read_text()), rows


@pytest.mark.slow
def test_static_inference_equals_the_stage_s_own_evaluation_of_that_subnet(toy_width_model, tmp_path):
    data_dir, width_dir = toy_width_model
    summary, rows = infer(data_dir, width_dir, tmp_path / "out", "--static", "--width_mult_list", "0.5,0.5,0.5,0.5",
                          "--depth_mult_list", "1.0")
    stage = json.loads(open(os.path.join(width_dir, "eval_results.json")).read())
    expected = next(s for s in stage["subnets"] if s["width_mult"] == 0.5)
    assert summary["metrics"]["acc"] == pytest.approx(expected["metrics"]["acc"], abs=1e-9)
    config = load_model(width_dir, 2).bert.config
    lengths = [len(r) for r in _dev_ids(data_dir, width_dir)]
    assert [r["macs"] for r in rows] == [subnet_macs(config, 0.5, 1.0, t) for t in lengths]  # no gates run
    assert summary["macs"] == pytest.approx(expected["macs"]) and summary["mean_layers"] == 4
    assert summary["latency_ms_batch1_median"] > 0 and summary["throughput_per_s_batch32"] > 0


def _dev_ids(data_dir, model_dir):
    from ofa_flexbert.glue.data import encode, get_task, read_split
    from ofa_flexbert.store.models import load_tokenizer

    task = get_task("sst-2")
    return [row["input_ids"] for row in encode(read_split(task, str(data_dir), "dev"), task,
                                               load_tokenizer(str(model_dir)), 40)]


@pytest.mark.slow
def test_dynamic_inference_gives_every_batch_size_the_answers_of_batch_size_one(toy_gated, tmp_path):
    data_dir, _, gates = toy_gated
    flags = ("--wd_dynamic", "--early_exit", "--exit_threshold", "0.5", "--width_mult_list", "0.25,0.5,0.75,1.0")
    one, rows_one = infer(data_dir, gates, tmp_path / "one", *flags, "--per_gpu_eval_batch_size", "1")
    many, rows_many = infer(data_dir, gates, tmp_path / "many", *flags, "--per_gpu_eval_batch_size", "64")
    assert rows_one == rows_many
    assert one["metrics"] == many["metrics"] and one["macs"] == many["macs"]
    exits = {r["exit_after"] for r in rows_one}
    assert len(exits) > 1 and len({tuple(r["heads"]) for r in rows_one}) > 1  # routes really differ
    assert one["macs_share"] < 1 and sum(one["exit_histogram"].values()) == len(rows_one)


@pytest.mark.slow
def test_gates_and_exit_checks_are_counted_in_each_input_s_cost(toy_gated, tmp_path):
    """Everything forced to full width and no exit can happen: the cost is the full model's plus
    exactly the gates' and exit checks' MACs."""
    from gate.io import load_gates
    from gate.settings import gate_macs

    data_dir, _, gates_dir = toy_gated
    summary, rows = infer(data_dir, gates_dir, tmp_path / "out", "--wd_dynamic", "--early_exit", "--exit_threshold",
                          "0", "--width_mult_list", "1,1,1,1")
    config = load_model(str(gates_dir), 2).bert.config
    settings = load_gates(str(gates_dir)).settings
    hidden = config.hidden_size
    checks = 2 * (hidden * hidden + hidden * 2)  # two off-ramps passed (pooler H*H + classifier H*C; cls pooling)
    lengths = [len(r) for r in _dev_ids(data_dir, gates_dir)]
    assert [r["macs"] for r in rows] == [subnet_macs(config, 1.0, 1.0, t) + gate_macs(settings, hidden, t, "cls")
                                         + checks for t in lengths]


@pytest.mark.slow
def test_the_reference_inference_command_lines_run_with_only_the_script_name_changed(toy_gated, tmp_path):
    data_dir, _, gates = toy_gated
    # --max_seq_length is 128 there; the toy model has 64 positions
    common = ["--model_type", "bert", "--task_name", "SST-2", "--data_dir", str(data_dir), "--model_dir", str(gates),
              "--max_seq_length", "64", "--per_gpu_eval_batch_size", "1", "--depth_mult_list", "1.0", "--do_eval",
              "--record_gpu_time"]
    for name, extra in (("static", ["--width_mult_list", "0.5,0.5,0.5,0.5", "--static"]),
                        ("w", ["--width_mult_list", "0.5,0.75,0.75,0.75", "--w_dynamic"]),
                        ("wd", ["--width_mult_list", "0.25,0.25,0.25,0.5", "--wd_dynamic", "--early_exit",
                                "--exit_threshold", "0.15"])):
        out = tmp_path / name
        assert main([*common, "--output_dir", str(out), *extra]) == 0
        assert json.loads((out / "infer_results.json").read_text())["mode"] == extra[-1 if name != "wd" else 2][2:]


@pytest.mark.slow
def test_fixed_gate_runs_every_block_at_its_width_instead_of_the_gates(toy_gated, tmp_path):
    """The reference's --fixed_gate (which crashes there): w-dynamic with every decision forced to 0.5 is the
    static 0.5 subnet -- same predictions and MACs, no gate cost -- and wd-dynamic is d-dynamic at 0.5."""
    data_dir, _, gates = toy_gated
    fixed, fixed_rows = infer(data_dir, gates, tmp_path / "fixed", "--w_dynamic", "--fixed_gate", "0.5")
    static, static_rows = infer(data_dir, gates, tmp_path / "static", "--static", "--width_mult_list", "0.5,0.5,0.5,0.5")
    assert [(r["prediction"], r["macs"], r["heads"]) for r in fixed_rows] == \
        [(r["prediction"], r["macs"], r["heads"]) for r in static_rows]
    assert (fixed["mode"], fixed["fixed_gate"]) == ("w_dynamic", 0.5)
    exits = ("--early_exit", "--exit_threshold", "0.5")
    fixed, fixed_rows = infer(data_dir, gates, tmp_path / "fixed_wd", "--wd_dynamic", "--fixed_gate", "0.5", *exits)
    depth, depth_rows = infer(data_dir, gates, tmp_path / "d", "--d_dynamic", "--width_mult_list", "0.5,0.5,0.5,0.5",
                              *exits)
    assert [(r["prediction"], r["macs"], r["exit_after"]) for r in fixed_rows] == \
        [(r["prediction"], r["macs"], r["exit_after"]) for r in depth_rows]
    assert len({r["exit_after"] for r in depth_rows}) > 1  # exits happened: the comparison covers them


@pytest.mark.parametrize("flags,message", [
    ((), "--stage infer: give exactly one of --static, --w_dynamic, --d_dynamic, --wd_dynamic, --cascade"),
    (("--static", "--w_dynamic"), "--stage infer: give exactly one of --static, --w_dynamic, --d_dynamic, "
                                  "--wd_dynamic, --cascade (got --static, --w_dynamic)"),
    (("--cascade", "0.5"), "--cascade: needs two or more subnet widths, cheapest first, got 1"),
    (("--cascade", "0.5,1", "--cascade_thresholds", "0.1,0.2"),
     "--cascade_thresholds: one threshold, or one per subnet but the last (1), got 2"),
    (("--cascade", "0.5,1", "--cascade_thresholds", "0"),
     "--cascade_thresholds: each must be positive (an input stops when its entropy is below it), got 0"),
    (("--cascade", "0.5,1", "--cascade_depths", "1", "--cascade_thresholds", "0.3"),
     "--cascade_depths: one depth per --cascade subnet (2), got 1"),
    (("--static", "--width_mult_list", "0.5,1"), "--static: one width for every input, so --width_mult_list needs "
                                                 "identical values (e.g. 0.5,0.5,0.5,0.5), got 0.5,1"),
    (("--d_dynamic", "--width_mult_list", "1,1"), "--d_dynamic: depth-dynamic inference exits early; add --early_exit"),
    (("--static", "--width_mult_list", "0.5,0.5", "--fixed_gate", "0.5"),
     "--fixed_gate: replaces the gates' decisions, so it needs --w_dynamic or --wd_dynamic (got --static)"),
    (("--w_dynamic", "--fixed_gate", "1.5"), "--fixed_gate: a width in (0, 1], got 1.5"),
    (("--static", "--width_mult_list", "0.5,0.5", "--gate_threshold", "0.5"),
     "--gate_threshold: a rule for the gates' decisions, so it needs --w_dynamic or --wd_dynamic (got --static)"),
    (("--w_dynamic", "--fixed_gate", "0.5", "--gate_threshold", "0.5"),
     "--gate_threshold: a rule for the gates' decisions, so it needs --w_dynamic or --wd_dynamic without --fixed_gate"),
    (("--w_dynamic", "--gate_threshold", "0"), "--gate_threshold: a cumulative probability in (0, 1], got 0"),
])
@pytest.mark.slow
def test_bad_mode_flags_get_one_line(toy_width_model, tmp_path, capsys, flags, message):
    data_dir, width_dir = toy_width_model
    assert main(stage_argv("infer", data_dir, width_dir, tmp_path / "out", *flags)) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dynamic_modes_need_gates(toy_width_model, tmp_path, capsys):
    data_dir, width_dir = toy_width_model
    assert main(stage_argv("infer", data_dir, width_dir, tmp_path / "out", "--w_dynamic")) == 2
    assert capsys.readouterr().err.strip() == (f"error: --w_dynamic: {width_dir} has no gates (gates.json); "
                                               "run --stage gate first")


@pytest.mark.slow
def test_the_reference_trade_off_settings_are_valid_json_and_run_from_the_file(toy_gated, tmp_path, capsys):
    from ofa_flexbert.config import CONFIG_DIR

    path = os.path.join(CONFIG_DIR, "best_tradeoff_inference_config.json")
    reference = json.load(open(path))
    assert reference["mrpc"] == {"mode": "wd_dynamic", "width_mult_list": [0.5, 0.55, 0.75, 0.75], "depth_mult": 1.0,
                                 "early_exit": True, "exit_threshold": 0.25}  # docs/reference.md, Best-tradeoff settings
    assert sorted(k for k in reference if not k.startswith("_")) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte",
                                                                     "sst-2"]
    data_dir, _, gates = toy_gated
    summary, _ = infer(data_dir, gates, tmp_path / "out", "--inference_config", path)
    assert (summary["mode"], summary["width_mult_list"], summary["exit_threshold"]) == \
        ("wd_dynamic", [0.5, 0.55, 0.55, 0.75], 0.4)  # the sst-2 entry
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "sst-2": {"mode": "static"},\n}\n')  # the reference's trailing comma
    assert main(stage_argv("infer", data_dir, gates, tmp_path / "b", "--inference_config", str(broken))) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --inference_config {broken}:3: not valid JSON")
    assert main(stage_argv("infer", data_dir, gates, tmp_path / "b", "--inference_config", path, "--static")) == 2
    assert capsys.readouterr().err.strip() == ("error: --inference_config and --static: give one of them "
                                               "(the file names the mode)")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_depth_rule_follows_the_weights_through_the_gate_stage(toy_width_model, tmp_path, capsys):
    """A model depth-trained with --depth_rule every_other keeps that rule after --stage gate: its static
    depth-0.5 subnet runs layers 1 and 3 of 4, and early exit (which needs prefix subnets) is refused."""
    import shutil

    data_dir, width_dir = toy_width_model
    depth_dir = tmp_path / "depth"
    shutil.copytree(width_dir, depth_dir)
    info = json.loads((depth_dir / "flexbert.json").read_text())
    (depth_dir / "flexbert.json").write_text(json.dumps({**info, "stage": "depth", "depth_rule": "every_other"}))
    gates = tmp_path / "gates"
    assert main(stage_argv("gate", data_dir, depth_dir, gates, "--max_steps", "2")) == 0
    assert json.loads((gates / "flexbert.json").read_text())["depth_rule"] == "every_other"
    _, rows = infer(data_dir, gates, tmp_path / "static", "--static", "--width_mult_list", "1,1,1,1",
                    "--depth_mult_list", "0.5")
    assert {tuple(r["layers"]) for r in rows} == {(1, 3)}
    capsys.readouterr()
    assert main(stage_argv("infer", data_dir, gates, tmp_path / "exit", "--d_dynamic", "--early_exit",
                           "--width_mult_list", "1,1,1,1")) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --early_exit: the model in {gates} was depth-trained with --depth_rule every_other, whose shallow "
        "subnets are not the first layers; early exit needs a --depth_rule prefix model")
