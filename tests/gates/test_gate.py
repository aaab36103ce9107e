"""gate/ and --stage gate: targets, class weights, the loss, routing, save/load and a short run."""
import json
import os

import numpy as np
import paddle
import pytest

from conftest import stage_argv, tiny_bert_config, vdl_scalars
from gate.io import load_gates, load_off_ramps, save_gates, save_off_ramps
from gate.loss import class_weights, gate_loss, temperature, training_rows
from gate.modules import GateRouter, Gates, gate_input
from gate.ramps import ExitCheck, OffRamps, chain, default_ramp_layers, entropy
from gate.settings import GateSettings, choose_classes, gate_macs
from ofa_flexbert.config.checks import check_gate_threshold
from gate.targets import smallest_enough
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.errors import UserError
from ofa_flexbert.engine.routes import Route, config_width
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")


def test_the_target_is_the_smallest_width_that_is_right_else_the_widest():
    correct = np.array([[0, 1, 0, 0, 1],   # width 0.25
                        [1, 1, 0, 0, 0],   # 0.5
                        [1, 0, 0, 1, 0],   # 0.75
                        [0, 0, 0, 1, 1]])  # 1.0: never consulted, the last class is also "none is right"
    assert smallest_enough(correct).tolist() == [1, 0, 3, 2, 0]


def test_balanced_class_weights_from_a_known_distribution():
    targets = np.array([0] * 6 + [1] * 3 + [3] * 3)  # 12 inputs, class 2 absent
    np.testing.assert_allclose(class_weights(targets, 4), [12 / 18, 12 / 9, 0.0, 12 / 9])


def test_temperature_follows_the_reference_schedule():
    assert temperature(0, 1000) == temperature(499, 1000) == 1.0
    assert temperature(500, 1000) == pytest.approx(np.exp(np.log(0.3) * 0.5))  # 0.5477
    assert temperature(999, 1000) == temperature(500, 1000)  # changes every 500 steps only
    assert temperature(1000, 1000) == 0.5  # 0.3 would be below the floor


def test_gate_loss_without_noise_is_the_class_weighted_cross_entropy():
    rng = np.random.RandomState(0)
    logits = [paddle.to_tensor(rng.randn(5, 4).astype("float32")) for _ in range(2)]
    targets, weights = np.array([0, 3, 1, 1, 2]), np.array([0.5, 2.0, 1.0, 4.0])
    expected = 0.0
    for l in logits:
        p = np.exp(l.numpy()) / np.exp(l.numpy()).sum(-1, keepdims=True)
        expected += sum(-np.log(p[b, t]) * weights[t] for b, t in enumerate(targets))
    expected /= 2 * 5
    assert float(gate_loss(logits, targets, weights, tau=None)) == pytest.approx(expected, rel=1e-5)
    paddle.seed(0)
    noisy = float(gate_loss(logits, targets, weights, tau=1.0))
    assert np.isfinite(noisy) and noisy != pytest.approx(expected, rel=1e-3)


def features_naming_row_width_gate(rows=3, widths=4, gates=2, hidden=2):
    """[B, K, G, H] whose every value is 100·b + 10·k + g: a vector says where it came from."""
    b, k, g = np.meshgrid(np.arange(rows), np.arange(widths), np.arange(gates), indexing="ij")
    return np.repeat((100 * b + 10 * k + g)[..., None], hidden, axis=-1).astype("float32")


def test_target_rows_take_each_input_at_its_target_width():
    rows, targets = training_rows(features_naming_row_width_gate(), np.array([2, 0, 3]), "target")
    assert rows[:, 0, 0].tolist() == [20, 100, 230] and rows[:, 1, 0].tolist() == [21, 101, 231]
    assert targets.tolist() == [2, 0, 3]


def test_all_width_rows_are_k_copies_of_each_input_with_its_target():
    """--gate_features all_widths: every input once per width, each copy with the input's own target,
    so the width a vector was computed at says nothing about its target."""
    rows, targets = training_rows(features_naming_row_width_gate(), np.array([2, 0, 3]), "all_widths")
    assert rows.shape == (12, 2, 2)
    assert rows[:, 0, 0].tolist() == [0, 10, 20, 30, 100, 110, 120, 130, 200, 210, 220, 230]
    assert targets.tolist() == [2] * 4 + [0] * 4 + [3] * 4
    for width in range(4):  # at each width the targets are the inputs' own: the width predicts nothing
        assert targets[width::4].tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match="^--gate_features: expected all_widths or target, got 'x'$"):
        training_rows(features_naming_row_width_gate(), np.array([2, 0, 3]), "x")


def test_settings_refuse_a_gate_count_that_does_not_divide_the_layers():
    with pytest.raises(ValueError, match=r"^--num_gates 4: must divide the model's 6 layers \(one of 1, 2, 3, 6\)$"):
        GateSettings(4, 6, (0.25, 0.5, 1.0), (0.25, 0.5, 1.0))
    settings = GateSettings(3, 6, (0.25, 0.5, 1.0), (0.25, 0.5, 1.0))
    assert settings.gate_steps() == [0, 2, 4] and settings.layers_per_gate == 2
    # gate MACs: 3 MLPs (H*H + H*K) + the embeddings' mean (T*H) + 2 pooled reads (T*H each with mean pooling)
    assert gate_macs(settings, 8, 5, "mean") == 3 * (64 + 24) + 3 * 40
    assert gate_macs(settings, 8, 5, "cls") == 3 * (64 + 24) + 40
    # with a 2-label probe: the MLP reads H + 3 inputs, and each gate runs the probe (H*H + H*C)
    probed = GateSettings(3, 6, (0.25, 0.5, 1.0), (0.25, 0.5, 1.0), probe_labels=2)
    assert gate_macs(probed, 8, 5, "mean") == 3 * ((8 + 3) * 8 + 24 + 64 + 16) + 3 * 40
    assert GateSettings.from_json(probed.to_json()) == probed
    assert GateSettings.from_json({k: v for k, v in settings.to_json().items() if k != "probe_labels"}) == settings
    with pytest.raises(ValueError, match=r"^--gate_inputs pooled\+probe: the probe's entropy needs a classification"):
        GateSettings(3, 6, (0.25, 0.5, 1.0), (0.25, 0.5, 1.0), probe_labels=1)


def test_a_probe_reads_what_the_final_head_predicts_and_stays_frozen():
    """The probe's output is the model's own head on the vector: its softmax and entropy / ln C, computed
    here by an off-ramp copied from the same head; the gate's first layer reads H + C + 1 values."""
    model = tiny_model("mean")
    settings = GateSettings(2, 4, (0.5, 1.0), (0.5, 1.0), probe_labels=2)
    gates = Gates(32, settings)
    gates.copy_probes(model)
    x = paddle.to_tensor(np.random.RandomState(1).normal(size=(6, 32)).astype("float32"))
    head = OffRamps.from_model(model, [0]).head(0)(x).numpy()
    probs = np.exp(head - head.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    spread = -(probs * np.log(probs)).sum(axis=1) / np.log(2)
    got = gates.gates[1].probe(x).numpy()
    np.testing.assert_allclose(got, np.concatenate([probs, spread[:, None]], axis=1), rtol=1e-5, atol=1e-6)
    assert gates.gates[0].dense.weight.shape == [32 + 3, 32]
    assert all(p.stop_gradient for g in gates.gates for p in g.probe.parameters())
    assert not any(p.stop_gradient for g in gates.gates for p in (g.dense.weight, g.out.weight))


def test_a_ranked_gate_picks_the_narrowest_class_whose_cumulative_probability_reaches_the_threshold():
    """Softmax [0.2, 0.3, 0.1, 0.4] has cumulative [0.2, 0.5, 0.6, 1]: each threshold's class in closed form."""
    logits = np.log(np.array([[0.2, 0.3, 0.1, 0.4]]))
    picks = {t: int(choose_classes(logits, t)[0]) for t in (0.1, 0.19, 0.25, 0.45, 0.55, 0.65, 0.95, 1.0)}
    assert picks == {0.1: 0, 0.19: 0, 0.25: 1, 0.45: 1, 0.55: 2, 0.65: 3, 0.95: 3, 1.0: 3}
    assert int(choose_classes(logits)[0]) == 3  # no threshold: the argmax
    rng = np.random.RandomState(0)
    batch = rng.normal(scale=3.0, size=(200, 4))
    assert (choose_classes(batch) == batch.argmax(axis=1)).all()
    chosen = np.stack([choose_classes(batch, t) for t in np.linspace(0.05, 1.0, 20)])
    assert (np.diff(chosen, axis=0) >= 0).all()  # a higher threshold never picks a narrower class
    assert (chosen[-1] == 3).all() and len(set(chosen[0])) > 1
    with pytest.raises(ValueError, match=r"^--gate_threshold: a cumulative probability in \(0, 1\], got 0$"):
        check_gate_threshold(0.0)


def tiny_model(pooling="cls"):
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(3)
    model = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=4))
    model.bert.config.pooling = pooling
    model.eval()
    return model


def random_batch(rows, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, 40, size=(rows, 8)).astype("int64")
    ids[::2, 6:] = 0
    ids[:, 0] = 2  # the same [CLS] id in every row
    return paddle.to_tensor(ids), paddle.zeros_like(paddle.to_tensor(ids))


def test_the_first_gate_depends_on_the_input_and_routes_follow_every_gate():
    model = tiny_model()
    settings = GateSettings(2, 4, (0.25, 0.5, 0.75, 1.0), (0.25, 0.5, 0.75, 1.0))
    paddle.seed(5)
    gates = Gates(32, settings)
    ids, types = random_batch(40)
    seen = {}

    def spy(state):
        if state.step == 0:
            seen["cls"], seen["gate"] = state.hidden[:, 0].numpy(), gate_input(state).numpy()

    classify(model, ids, types, hook=spy)
    assert np.ptp(seen["cls"], axis=0).max() < 1e-6  # what the reference's first gate reads: one vector for all
    assert np.ptp(seen["gate"], axis=0).max() > 1e-2  # the masked mean of the embeddings differs
    router = GateRouter(gates, model.bert.config, 40)
    with paddle.no_grad():
        out = classify(model, ids, types, Route.uniform(model.bert.config), hook=router)
    assert len(set(router.decisions[0].tolist())) > 1  # two inputs, two different first widths
    widths = [config_width(model.bert.config, w) for w in settings.class_widths]
    for row, route in enumerate(out.routes):
        first, second = router.decisions[:, row]
        assert route.widths == (widths[first],) * 2 + (widths[second],) * 2
    ranked = GateRouter(gates, model.bert.config, 40, threshold=0.3)  # the same gates under the ranked rule
    with paddle.no_grad():
        out = classify(model, ids, types, Route.uniform(model.bert.config), hook=ranked)
    first = choose_classes(gates.gates[0](paddle.to_tensor(seen["gate"])).numpy(), 0.3)  # what gate 0 read
    assert (ranked.decisions[0] == first).all() and (ranked.decisions[0] != router.decisions[0]).any()
    for row, route in enumerate(out.routes):
        one, two = ranked.decisions[:, row]
        assert route.widths == (widths[one],) * 2 + (widths[two],) * 2


def test_gates_round_trip_through_the_model_directory(tmp_path):
    settings = GateSettings(2, 4, (0.5, 1.0), (0.5, 1.0))
    paddle.seed(1)
    gates = Gates(32, settings)
    assert load_gates(str(tmp_path)) is None  # an ordinary model directory
    save_gates(gates, str(tmp_path))
    loaded = load_gates(str(tmp_path))
    x = [paddle.randn([3, 32]) for _ in range(2)]
    assert loaded.settings == settings
    for a, b in zip(gates(x), loaded(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with open(tmp_path / "gates.json", "w") as fh:
        fh.write("{")
    with pytest.raises(UserError, match=r"cannot read its gates \(gates.json, gates.pdparams\)"):
        load_gates(str(tmp_path))


# --- the stage on the toy task --------------------------------------------------------------------

def gate_argv(data_dir, model_dir, out, *extra):
    return stage_argv("gate", data_dir, model_dir, out, "--learning_rate", "1e-3", "--logging_steps", "150",
                      "--num_train_epochs", "8", *extra)  # cached features: 8 epochs take seconds


@pytest.fixture(scope="module")
def toy_gates(toy_width_model, tmp_path_factory):
    data_dir, width_dir = toy_width_model
    out = tmp_path_factory.mktemp("gate") / "gate"
    assert main(gate_argv(data_dir, width_dir, out)) == 0
    return data_dir, width_dir, out


@pytest.mark.slow
def test_gate_stage_leaves_the_backbone_bit_identical_and_saves_loadable_gates(toy_gates):
    _, width_dir, out = toy_gates
    before = paddle.load(os.path.join(width_dir, "model_state.pdparams"))
    after = paddle.load(os.path.join(out, "model_state.pdparams"))
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(before[name].numpy(), after[name].numpy(), err_msg=name)
    gates = load_gates(str(out))
    assert gates.settings.num_gates == 4 and gates.settings.gate_setting == (0.25, 0.5, 0.75, 1.0)
    assert not os.listdir(os.path.join(out, "checkpoint")) == []  # only the gates are the trained model ...
    state = json.load(open(os.path.join(out, "checkpoint", "state.json")))
    assert state["fingerprint"]["stage"] == "gate"


@pytest.mark.slow
def test_a_short_gate_run_beats_the_majority_rate_and_reports_what_the_gates_do(toy_gates):
    _, _, out = toy_gates
    results = json.load(open(os.path.join(out, "eval_results.json")))
    assert results["stage"] == "gate" and [s["width_mult"] for s in results["subnets"]] == [0.25, 0.5, 0.75, 1.0]
    targets = results["targets"]
    assert sum(targets["distribution"]) == pytest.approx(1.0) and targets["majority_rate"] == max(targets["distribution"])
    # One width is the target of most toy inputs, so plain accuracy rewards answering it always; the
    # balanced weights make the gates learn the rare classes too: balanced accuracy beats the 1/K of a
    # constant answer on the features they are trained on.
    # (Per gate the dev set is small -- 9 of its 400 inputs have the second class as target -- so the
    # mean over the gates is what is checked.)
    gates = results["gates"]
    chance = gates[0]["chance_balanced_accuracy"]
    assert np.mean([g["balanced_accuracy_at_target_width"] for g in gates]) > chance + 0.05, gates
    for gate in gates:
        assert not gate["single_class"] and sum(gate["chosen_distribution"]) == pytest.approx(1.0)
    gated = results["gated"]
    assert 0 < gated["macs_share"] < 1 and 0.5 < gated["metrics"]["acc"] <= 1
    # the evidence it is judged by: copying, perfect gates, its routes dealt out at random
    assert gates[0]["agreement_with_previous"] is None
    assert all(0.0 <= g["agreement_with_previous"] <= 1.0 for g in gates[1:])
    oracle, random = results["oracle"], results["random_routes"]
    # the default 'agree' targets: perfect gates give every input the widest width's answer, so its metric
    assert oracle["gate_target"] == "agree"
    assert oracle["metrics"]["acc"] == pytest.approx(results["subnets"][-1]["metrics"]["acc"], abs=1e-12)
    assert len(random["per_seed"]) == 3 and random["metrics"]["acc"] == pytest.approx(np.mean(random["per_seed"]))
    # the same routes dealt to other inputs: MACs differ only through the inputs' lengths
    assert 0 < random["macs_share"] < 1
    record = json.load(open(os.path.join(out, "gates.json")))
    assert (record["gate_features"], record["gate_target"], record["gate_training"]) == ("all_widths", "agree", "targets")
    scalars = vdl_scalars(out, "gate")
    losses = [value for _, value in scalars["eval/gate_loss"]]
    assert losses[-1] < losses[0] and len(losses) >= 3
    assert "train/tau" in scalars and "eval/gate0/balanced_accuracy" in scalars


@pytest.mark.slow
def test_gate_stage_refuses_a_gate_count_that_does_not_divide_the_layers(toy_width_model, tmp_path, capsys):
    data_dir, width_dir = toy_width_model
    assert main(gate_argv(data_dir, width_dir, tmp_path / "out", "--num_gates", "3")) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--num_gates 3: must divide the model's 4 layers (one of 1, 2, 4)")
    assert not os.path.exists(tmp_path / "out" / "gates.json")


@pytest.mark.slow
def test_probe_gates_train_keep_their_probe_and_export_routes_as_infer(toy_width_model, tmp_path):
    """--gate_inputs pooled+probe: the saved probes are still the backbone's head after training, gates.json
    records them, and a w-dynamic segment export (the probes inside its graphs) passes its route check."""
    from ofa_flexbert.store.models import load_model

    data_dir, width_dir = toy_width_model
    out = tmp_path / "gates"
    assert main(stage_argv("gate", data_dir, width_dir, out, "--max_steps", "20", "--logging_steps", "20",
                           "--learning_rate", "1e-3", "--gate_inputs", "pooled+probe")) == 0
    assert json.loads((out / "gates.json").read_text())["probe_labels"] == 2
    gates, model = load_gates(str(out)), load_model(width_dir, 2)
    for gate in gates.gates:
        np.testing.assert_array_equal(gate.probe.classifier.weight.numpy(), model.classifier.weight.numpy())
        np.testing.assert_array_equal(gate.probe.pooler.weight.numpy(), model.bert.pooler.dense.weight.numpy())
    config = tmp_path / "w.json"
    config.write_text(json.dumps({"sst-2": {"mode": "w_dynamic", "width_mult_list": [0.25, 0.5, 0.75, 1.0]}}))
    assert main(stage_argv("export", data_dir, out, tmp_path / "export", "--inference_config", str(config))) == 0
    check = json.loads((tmp_path / "export" / "w_dynamic" / "manifest.json").read_text())["check"]
    assert check["same_routes"] == 1.0 and check["max_abs_logit_diff"] <= 1e-5


@pytest.mark.slow
def test_a_resumed_gate_run_equals_an_uninterrupted_one(toy_width_model, tmp_path, monkeypatch):
    from conftest import assert_same_checkpoint, run_interrupted
    from ofa_flexbert.app.stages.gate_targets import GateStrategy

    data_dir, width_dir = toy_width_model
    extra = ("--max_steps", "9", "--logging_steps", "3")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(gate_argv(data_dir, width_dir, whole, *extra)) == 0
    run_interrupted(monkeypatch, GateStrategy, 8, gate_argv(data_dir, width_dir, broken, *extra))
    assert json.loads((broken / "checkpoint" / "state.json").read_text())["step"] == 6
    assert main(gate_argv(data_dir, width_dir, broken, *extra, "--resume")) == 0
    assert_same_checkpoint(whole, broken, atol=0)  # the Gumbel noise and the temperature resume too
    assert json.loads((broken / "eval_results.json").read_text()) == json.loads((whole / "eval_results.json").read_text())


@pytest.mark.slow
def test_gate_stage_on_two_ranks_shares_the_target_pass_and_keeps_the_ranks_identical(toy_width_model, tmp_path):
    from launcher import launch

    data_dir, width_dir = toy_width_model
    argv = gate_argv(data_dir, width_dir, tmp_path / "dp", "--max_steps", "6", "--logging_steps", "3")
    rank0, rank1 = launch(tmp_path, "dp", "sync", argv)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    assert main(gate_argv(data_dir, width_dir, tmp_path / "single", "--max_steps", "6", "--logging_steps", "3")) == 0
    dp = json.loads((tmp_path / "dp" / "eval_results.json").read_text())
    single = json.loads((tmp_path / "single" / "eval_results.json").read_text())
    # the targets and static subnets come from batches split between the ranks and gathered
    assert dp["targets"] == single["targets"] and dp["subnets"] == single["subnets"]


# --- off-ramps ----------------------------------------------------------------------------------

def test_default_off_ramps_sit_where_the_prefix_subnets_end():
    assert default_ramp_layers(12) == [5, 8]  # the reference's 5,8 (0-based)
    assert default_ramp_layers(6) == [2, 3]  # all-MiniLM-L6-v2: after its 3- and 4-layer prefixes
    assert default_ramp_layers(4) == [1, 2]


def test_an_off_ramp_copied_from_the_final_head_answers_as_the_prefix_subnet_does(tmp_path):
    model = tiny_model("mean")
    ramps = OffRamps.from_model(model, [1, 2])
    ids, types = random_batch(6)
    exit_at_2 = Route((0, 1, 2, 3), (config_width(model.bert.config, 1.0),) * 4, exit_after=2)
    with paddle.no_grad():
        early = classify(model, ids, types, exit_at_2, exit_heads=ramps.heads()).logits.numpy()
        prefix = classify(model, ids, types, Route.uniform(model.bert.config, 1.0, 0.5)).logits.numpy()
    np.testing.assert_allclose(early, prefix, atol=1e-6, rtol=0)
    save_off_ramps(ramps, str(tmp_path))
    loaded = load_off_ramps(str(tmp_path))
    assert loaded.layers == (1, 2)
    x = paddle.randn([3, 32])
    np.testing.assert_array_equal(loaded.head(1)(x).numpy(), ramps.head(1)(x).numpy())


def test_the_exit_check_retires_exactly_the_rows_below_the_entropy_threshold():
    model = tiny_model()
    ramps = OffRamps.from_model(model, [1])
    with paddle.no_grad():  # a sharper off-ramp, so that entropies spread around the threshold
        ramps.classifiers[0].weight.set_value(ramps.classifiers[0].weight * 60)
    ids, types = random_batch(30)
    with paddle.no_grad():
        at_ramp = classify(model, ids, types, Route.uniform(model.bert.config, 1.0, 0.5), exit_heads=ramps.heads(),
                           ).logits  # every row through the off-ramp after 2 layers
        ent = entropy(at_ramp).numpy()
        threshold = float(np.median(ent))
        full = classify(model, ids, types).logits.numpy()
        out = classify(model, ids, types, hook=chain(ExitCheck(ramps, threshold)), exit_heads=ramps.heads())
    leave = ent < threshold
    assert 0 < leave.sum() < 30
    assert [r.exit_after for r in out.routes] == [2 if x else None for x in leave]
    got = out.logits.numpy()
    np.testing.assert_allclose(got[leave], at_ramp.numpy()[leave], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[~leave], full[~leave], atol=1e-6, rtol=0)
    assert entropy(paddle.to_tensor([[0.0, 0.0]]), normalized=True).numpy()[0] == pytest.approx(1.0)


@pytest.mark.slow
def test_gate_stage_saves_off_ramps_and_refuses_one_after_the_last_layer(toy_gates, toy_width_model, tmp_path, capsys):
    _, _, out = toy_gates
    assert load_off_ramps(str(out)).layers == (1, 2)  # the 4-layer toy model's defaults
    data_dir, width_dir = toy_width_model
    assert main(gate_argv(data_dir, width_dir, tmp_path / "out", "--off_ramps", "3")) == 2
    assert capsys.readouterr().err.strip() == ("error: --off_ramps: layer 3 is not one an input can leave after "
                                               "(0-based, 0..2 for this 4-layer model)")


@pytest.mark.slow
def test_off_ramps_stay_copies_of_the_final_head_unless_trained_and_training_lowers_their_loss(
        toy_gates, toy_width_model, tmp_path):
    _, width_dir, out = toy_gates
    final = paddle.load(os.path.join(width_dir, "model_state.pdparams"))
    ramps = load_off_ramps(str(out))
    for pooler, classifier in zip(ramps.poolers, ramps.classifiers):  # untrained: exact copies
        np.testing.assert_array_equal(pooler.weight.numpy(), final["bert.pooler.dense.weight"].numpy())
        np.testing.assert_array_equal(classifier.weight.numpy(), final["classifier.weight"].numpy())
    results = json.loads((out / "eval_results.json").read_text())
    assert [r["layer"] for r in results["off_ramps"]] == [1, 2]
    data_dir, _ = toy_width_model
    trained = tmp_path / "trained"
    assert main(gate_argv(data_dir, width_dir, trained, "--train_off_ramps")) == 0
    losses = [value for _, value in vdl_scalars(trained, "gate")["eval/ramp_loss"]]
    assert losses[-1] < losses[0]
    moved = load_off_ramps(str(trained))
    assert not np.array_equal(moved.classifiers[0].weight.numpy(), final["classifier.weight"].numpy())
    before = paddle.load(os.path.join(width_dir, "model_state.pdparams"))  # the backbone still untouched
    after = paddle.load(os.path.join(trained, "model_state.pdparams"))
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)


@pytest.mark.slow
def test_the_reference_gate_command_line_runs_with_only_the_script_name_changed(toy_width_model, tmp_path, caplog):
    """The seed README's train_gate.py command (docs/reference.md, Command-line flags), on the toy task."""
    import logging

    data_dir, width_dir = toy_width_model
    out = tmp_path / "gates"
    argv = ["--model_type", "bert", "--task_name", "SST-2", "--do_train", "--data_dir", str(data_dir),
            "--model_dir", str(width_dir), "--output_dir", str(out), "--max_seq_length", "40",
            "--learning_rate", "2e-4", "--per_gpu_train_batch_size", "32", "--per_gpu_eval_batch_size", "32",
            "--num_train_epochs", "8", "--logging_steps", "40", "--width_mult_list", "0.25,0.5,0.75,1.0",
            "--gate_setting", "0.25,0.5,0.75,1.0", "--training_phase", "traingate",
            "--max_steps", "40"]  # (only to keep the test short)
    with caplog.at_level(logging.INFO, logger="ofa_flexbert"):
        assert main(argv) == 0
    assert json.loads((out / "flexbert.json").read_text())["stage"] == "gate" and (out / "gates.json").exists()
    notes = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert notes == ["--model_type bert: accepted for the reference's command lines, no effect (only BERT exists here)",
                     "--do_train: accepted for the reference's command lines, no effect (a training stage always trains)"]


def test_another_model_type_is_refused(capsys):
    assert main(["--model_type", "roberta", "--task", "rte", "--stage", "gate", "--model_dir", "m",
                 "--output_dir", "o"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --model_type roberta: only bert is supported "
                                               "(BertForSequenceClassification)")
