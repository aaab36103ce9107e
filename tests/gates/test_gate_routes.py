"""``--gate_training routes``: gates trained on the routes they take (gate/relaxed.py, gate/loss.py).

The cost the gates pay is checked against the engine's own accounting, and a short run on the
toy task must lower the route loss on dev and bring the MACs share toward its target.
"""
import json
import os

import numpy as np
import paddle
import pytest

from conftest import stage_argv, tiny_bert_config, vdl_scalars
from gate.io import load_gates
from gate.loss import macs_share, route_loss
from gate.modules import GateRouter, Gates
from gate.settings import GateSettings, gate_macs, route_costs
from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.engine.routes import Route, config_width
from ofa_flexbert.glue.tasks import get_task
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")


def tiny_config(pooling="mean"):
    config = tiny_bert_config(num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
    config.pooling = pooling
    return config


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_route_costs_add_up_to_the_engines_count_for_every_choice_of_every_gate(pooling):
    config = tiny_config(pooling)
    settings = GateSettings(2, 4, (0.25, 0.5, 1.0), (0.25, 0.75, 1.0))
    widths = [config_width(config, w) for w in settings.class_widths]
    for length in (3, 17):
        costs = route_costs(config, settings, length)
        assert costs.full == route_macs(config, Route.uniform(config), length)
        for first in range(3):
            for second in range(3):
                route = Route((0, 1, 2, 3), (widths[first],) * 2 + (widths[second],) * 2)
                expected = route_macs(config, route, length) + gate_macs(settings, config.hidden_size, length, pooling)
                assert costs.fixed + costs.block[first] + costs.block[second] == expected


def test_the_training_share_with_the_routers_choices_is_the_share_the_engine_counts():
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(3)
    model = BertForSequenceClassification(tiny_config())
    model.eval()
    settings = GateSettings(4, 4, (0.25, 0.5, 0.75, 1.0), (0.25, 0.5, 0.75, 1.0))
    paddle.seed(5)
    gates = Gates(32, settings)
    rng = np.random.RandomState(0)
    ids = rng.randint(5, 40, size=(9, 10)).astype("int64")
    ids[::3, 4:] = 0  # padding: rows of 4 and of 10 tokens
    ids = paddle.to_tensor(ids)
    router = GateRouter(gates, model.bert.config, 9)
    with paddle.no_grad():
        out = classify(model, ids, paddle.zeros_like(ids), Route.uniform(model.bert.config), hook=router)
    lengths = [4 if row % 3 == 0 else 10 for row in range(9)]
    engine = sum(route_macs(model.bert.config, route, t) + gate_macs(settings, 32, t, "mean")
                 for route, t in zip(out.routes, lengths))
    full = sum(route_macs(model.bert.config, Route.uniform(model.bert.config), t) for t in lengths)
    assert len(set(router.decisions.ravel().tolist())) > 1  # the routes differ
    choices = [paddle.nn.functional.one_hot(paddle.to_tensor(router.decisions[g]), 4) for g in range(4)]
    share = macs_share(choices, [route_costs(model.bert.config, settings, t) for t in lengths])
    np.testing.assert_allclose(float(share), engine / full, rtol=1e-6)


def test_the_route_loss_is_the_distillation_plus_the_weighted_share_above_the_target():
    task = get_task("sst-2")
    logits = paddle.to_tensor([[2.0, -1.0], [0.5, 0.5]])
    teacher = paddle.to_tensor([[1.0, 0.0], [0.0, 3.0]])
    p = np.exp([[1.0, 0.0], [0.0, 3.0]])
    p /= p.sum(1, keepdims=True)
    log_q = np.log(np.exp([[2.0, -1.0], [0.5, 0.5]]) / np.exp([[2.0, -1.0], [0.5, 0.5]]).sum(1, keepdims=True))
    distill = -(p * log_q).sum(1).mean()
    for share, penalty in ((0.7, 0.2), (0.3, 0.0)):
        loss, d, pen = route_loss(task, logits, teacher, paddle.to_tensor(share), 0.5, 3.0)
        np.testing.assert_allclose([float(loss), float(d), float(pen)], [distill + 3.0 * penalty, distill, penalty],
                                   rtol=1e-5, atol=1e-7)


# --- the stage on the toy task --------------------------------------------------------------------

def route_argv(data_dir, model_dir, out, *extra):
    return stage_argv("gate", data_dir, model_dir, out, "--gate_training", "routes", "--learning_rate", "1e-3",
                      "--num_gates", "2", "--logging_steps", "10", "--max_steps", "40", *extra)


@pytest.fixture(scope="module")
def toy_routes(toy_width_model, tmp_path_factory):
    """Two route-trained runs from one model: ``free`` (target 100%: no MACs penalty) and ``tight``
    (a 30% target, weight 4)."""
    data_dir, width_dir = toy_width_model
    outs = {}
    for name, target, weight in (("free", "1", "1"), ("tight", "0.3", "4")):
        outs[name] = tmp_path_factory.mktemp("gate_routes") / name
        argv = route_argv(data_dir, width_dir, outs[name], "--gate_macs_target", target, "--gate_cost_weight", weight)
        assert main(argv) == 0
    return width_dir, outs


@pytest.mark.slow
def test_route_training_leaves_the_backbone_bit_identical_and_records_how_the_gates_learned(toy_routes):
    width_dir, outs = toy_routes
    before = paddle.load(os.path.join(width_dir, "model_state.pdparams"))
    after = paddle.load(os.path.join(outs["tight"], "model_state.pdparams"))
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(before[name].numpy(), after[name].numpy(), err_msg=name)
    saved = json.load(open(os.path.join(outs["tight"], "gates.json")))
    assert saved["gate_training"] == "routes" and saved["gate_macs_target"] == 0.3 and saved["gate_cost_weight"] == 4
    assert load_gates(str(outs["tight"])).settings.num_gates == 2
    checkpoint = paddle.load(os.path.join(outs["tight"], "checkpoint", "model.pdparams"))
    assert all(name.startswith(("gates.", "ramps.")) for name in checkpoint)  # the backbone is not checkpointed
    info = json.load(open(os.path.join(outs["tight"], "flexbert.json")))
    assert info["gate_training"] == "routes" and "class_weights" not in info


@pytest.mark.slow
def test_without_a_macs_penalty_the_dev_route_loss_falls(toy_routes):
    _, outs = toy_routes
    results = json.load(open(os.path.join(outs["free"], "eval_results.json")))
    scalars = vdl_scalars(outs["free"], "gate")
    losses = [value for _, value in scalars["eval/route_loss"]]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert results["route_loss"]["loss"] == pytest.approx(min(losses), rel=1e-6)  # the kept checkpoint
    assert results["route_loss"]["distillation"] == pytest.approx(min(losses), rel=1e-6)  # no penalty below 100%
    assert "train/macs_share" in scalars and "train/route_distill" in scalars


@pytest.mark.slow
def test_the_macs_penalty_brings_the_gated_model_down_to_its_target(toy_routes):
    _, outs = toy_routes
    free = json.load(open(os.path.join(outs["free"], "eval_results.json")))["gated"]["macs_share"]
    tight = json.load(open(os.path.join(outs["tight"], "eval_results.json")))
    assert free > 0.5 and tight["gated"]["macs_share"] <= 0.3, (free, tight["gated"])
    assert tight["route_loss"]["macs_target"] == 0.3 and tight["route_loss"]["macs_share"] == tight["gated"]["macs_share"]


@pytest.mark.slow
def test_a_resumed_route_run_equals_an_uninterrupted_one(toy_width_model, tmp_path, monkeypatch):
    from conftest import assert_same_checkpoint, run_interrupted
    from ofa_flexbert.app.stages.gate_routes import RouteGateStrategy

    data_dir, width_dir = toy_width_model
    extra = ("--max_steps", "6", "--logging_steps", "3")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(route_argv(data_dir, width_dir, whole, *extra)) == 0
    run_interrupted(monkeypatch, RouteGateStrategy, 5, route_argv(data_dir, width_dir, broken, *extra))
    assert json.loads((broken / "checkpoint" / "state.json").read_text())["step"] == 3
    assert main(route_argv(data_dir, width_dir, broken, *extra, "--resume")) == 0
    assert_same_checkpoint(whole, broken, atol=0)  # the Gumbel noise and the temperature resume too
    assert json.loads((broken / "eval_results.json").read_text()) == json.loads((whole / "eval_results.json").read_text())


@pytest.mark.parametrize("flag, value, message", [
    ("--gate_training", "labels", "--gate_training: expected one of targets, routes, got 'labels'"),
    ("--gate_macs_target", "0", "--gate_macs_target: a share of the full model's MACs, in (0, 1], got 0"),
    ("--gate_cost_weight", "-1", "--gate_cost_weight: must not be negative, got -1"),
])
@pytest.mark.slow
def test_bad_route_training_flags_get_one_line(toy_width_model, tmp_path, capsys, flag, value, message):
    data_dir, width_dir = toy_width_model
    assert main(route_argv(data_dir, width_dir, tmp_path / "out", flag, value)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


@pytest.mark.slow
def test_route_training_on_two_ranks_keeps_the_ranks_identical(toy_width_model, tmp_path):
    """The relaxed gated model runs through the DataParallel wrapper, so the ranks' gradients are
    averaged; without it (the control) each rank's gates follow their own shard."""
    from launcher import launch

    data_dir, width_dir = toy_width_model
    argv = route_argv(data_dir, width_dir, tmp_path / "dp", "--max_steps", "4", "--logging_steps", "2")
    rank0, rank1 = launch(tmp_path, "dp", "sync", argv)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    argv = route_argv(data_dir, width_dir, tmp_path / "control", "--max_steps", "4", "--logging_steps", "2")
    control0, control1 = launch(tmp_path, "control", "nosync", argv)
    assert any(np.abs(control0[name] - control1[name]).max() > 0 for name in control0 if name.startswith("gates."))


@pytest.mark.slow
def test_route_training_starts_from_the_gates_of_its_model_directory(toy_width_model, tmp_path, capsys):
    """Target-trained gates refined on their own routes: the run starts from them (at a vanishing
    learning rate its first evaluation is theirs), and gates of other settings are refused."""
    data_dir, width_dir = toy_width_model
    targets = tmp_path / "targets"
    assert main(stage_argv("gate", data_dir, width_dir, targets, "--num_gates", "2", "--learning_rate", "1e-3",
                           "--num_train_epochs", "2", "--logging_steps", "20")) == 0
    refined = tmp_path / "refined"
    assert main(route_argv(data_dir, targets, refined, "--learning_rate", "1e-12", "--max_steps", "1",
                           "--logging_steps", "1")) == 0
    assert json.loads((refined / "flexbert.json").read_text())["gates_started_from"] == str(targets)
    before = json.loads((targets / "eval_results.json").read_text())["gated"]
    after = json.loads((refined / "eval_results.json").read_text())["gated"]
    assert after == before and 0 < before["macs_share"] < 1
    assert main(route_argv(data_dir, targets, tmp_path / "other", "--num_gates", "4")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "its gates (2 gates, widths 0.25,0.5,0.75,1 -> 0.25,0.5,0.75,1) differ from the flags' (4 gates, "
        "0.25,0.5,0.75,1 -> 0.25,0.5,0.75,1); --gate_training routes starts from a model's gates, so give "
        "matching --num_gates/--gate_setting/--width_mult_list")
