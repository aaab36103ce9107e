"""Depth and final stages: the depth rules, the teacher mapping, subnets, MACs, training, resume."""
import copy
import json
import os

import numpy as np
import paddle
import pytest

from conftest import assert_same_checkpoint, run_interrupted, stage_argv, tiny_bert_config
from numpy_bert import bert_forward, classifier_logits, sliced_hf_weights
from ofa_flexbert.engine.accounting import layer_macs, mean_macs, subnet_macs
from ofa_flexbert.engine.losses import hidden_distillation, teacher_layer_map
from ofa_flexbert.engine.routes import Subnet, width_for
from ofa_flexbert.train.supernet import FlexOFA, convert_to_supernet, mapping_layers, plain_state_dict
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")



def test_teacher_mapping_pairs_the_right_layers():
    # 12 layers: the reference's K(d) lists (docs/reference.md, Depth stage)
    assert teacher_layer_map(6, 12, 0.5) == [0, 2, 4, 6, 8, 10, 12]
    assert teacher_layer_map(9, 12, 0.75) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]
    assert teacher_layer_map(12, 12, 1.0) == list(range(13))
    # 6 layers (3 and 4 kept): floor(j/d) for j < n, the last student layer to the last teacher layer
    assert teacher_layer_map(3, 6, 0.5) == [0, 2, 4, 6]
    assert teacher_layer_map(4, 6, 0.75) == [0, 1, 2, 4, 6]
    assert teacher_layer_map(6, 6, 1.0) == list(range(7))
    assert teacher_layer_map(4, 12, 0.3) == [0, 3, 6, 10, 12]  # exact decimals: 3 / 0.3 is 10, not 9


class Toy:
    """A random 6-layer teacher, a depth-elastic OFA student (converted copy) and a batch."""

    def __init__(self, rule="prefix", layers=6):
        from paddlenlp.transformers import BertForSequenceClassification

        paddle.seed(0)
        self.teacher = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=layers))
        self.teacher.eval()
        self.student = convert_to_supernet(copy.deepcopy(self.teacher), [0.25, 0.5, 1.0])
        self.student.eval()
        self.ofa = FlexOFA(self.student, depth_mult_list=[0.5, 0.75, 1.0], depth_rule=rule)
        rng = np.random.RandomState(0)
        ids = rng.randint(5, 40, size=(3, 9)).astype("int64")
        ids[1, 6:] = 0
        self.ids, self.types = paddle.to_tensor(ids), paddle.to_tensor(np.zeros_like(ids))

    def forward(self, width, depth, **kwargs):
        self.ofa.use(self.ofa.subnet_config(width, depth))
        return self.ofa(self.ids, token_type_ids=self.types, **kwargs)


@pytest.mark.parametrize("rule,expected", [("prefix", {0.5: [0, 1, 2], 0.75: [0, 1, 2, 3], 1.0: list(range(6))}),
                                           ("every_other", {0.5: [1, 3, 5], 0.75: [0, 1, 3, 4], 1.0: list(range(6))})])
def test_depth_d_runs_exactly_the_rule_s_layers(rule, expected):
    toy = Toy(rule)
    calls = []
    layers = toy.student.bert.encoder.layers
    hooks = [layer.register_forward_post_hook(lambda layer, inputs, output, i=i: calls.append(i))
             for i, layer in enumerate(layers)]
    for depth, kept in expected.items():
        calls.clear()
        logits, hidden = toy.forward(0.5, depth, output_hidden_states=True)
        assert calls == kept and len(hidden) == len(kept) + 1, (depth, calls)
    for hook in hooks:
        hook.remove()


def test_depth_and_width_subnet_equals_an_independently_sliced_shallow_dense_model():
    toy = Toy()
    got = toy.forward(0.5, 0.5).numpy()  # 2 of 4 heads, 32 of 64 neurons, layers 0-2 of 6
    size = width_for(0.5, 4, 8, 64)
    weights = sliced_hf_weights(plain_state_dict(toy.student), size.heads, 8, size.ffn)
    weights = {k: v for k, v in weights.items() if not k.startswith(tuple(f"bert.encoder.layer.{i}." for i in (3, 4, 5)))}
    config = {"hidden_size": 32, "num_attention_heads": size.heads, "head_dim": 8, "num_hidden_layers": 3,
              "layer_norm_eps": toy.teacher.bert.config.layer_norm_eps, "hidden_act": "gelu", "pad_token_id": 0}
    _, pooled = bert_forward(weights, config, toy.ids.numpy(), toy.types.numpy())
    np.testing.assert_allclose(got, classifier_logits(weights, pooled), atol=1e-5)


def test_mapped_hidden_loss_at_full_depth_equals_distillconfig_and_pairs_layers_by_the_map():
    paddle.seed(0)
    from paddlenlp.transformers import BertForSequenceClassification

    teacher = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=6))
    teacher.eval()
    student = convert_to_supernet(BertForSequenceClassification(tiny_bert_config(num_hidden_layers=6)), [0.5, 1.0])
    student.eval()
    ofa = FlexOFA(student, teacher, mapping_layers(student))
    ids = paddle.to_tensor(np.random.RandomState(1).randint(5, 40, size=(2, 7)).astype("int64"))
    _, teacher_hidden = ofa.teacher_forward(ids, output_hidden_states=True)
    ofa.use(ofa.subnet_config(0.5))
    _, student_hidden = ofa(ids, output_hidden_states=True)
    ours = hidden_distillation(student_hidden, teacher_hidden, teacher_layer_map(6, 6, 1.0))
    np.testing.assert_allclose(float(ours), float(ofa.calc_distill_loss()), rtol=1e-6)
    # with a 3-layer student the map decides which teacher state each term uses
    expected = sum(float(((student_hidden[j] - teacher_hidden[t]) ** 2).mean()) for j, t in enumerate([0, 2, 4, 6]))
    got = hidden_distillation(student_hidden[:4], teacher_hidden, teacher_layer_map(3, 6, 0.5))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_macs_match_a_count_of_the_multiplications_the_subnet_actually_runs():
    """Closed form vs forward hooks on every Linear (in x out per token) and the q/k/v shapes (QK^T, AV)."""
    toy = Toy()
    config = toy.student.bert.config
    for width, depth in ((1.0, 1.0), (0.5, 0.5), (0.25, 0.75)):
        counted = {"linear": 0, "attention": 0}

        def count(layer, inputs, output, name):
            x = inputs[0]
            tokens = int(np.prod(x.shape[:-1]))
            counted["linear"] += tokens * int(x.shape[-1]) * int(output.shape[-1])
            if ".q_proj" in name:  # QK^T and AV: 2 * T * T * (heads * head_dim) per example
                counted["attention"] += 2 * int(output.shape[-2]) ** 2 * int(output.shape[-1])

        hooks = [layer.register_forward_post_hook(lambda l, i, o, n=name: count(l, i, o, n))
                 for name, layer in toy.student.named_sublayers() if isinstance(layer, paddle.nn.Linear)]
        for length in (5, 9):
            counted.update(linear=0, attention=0)
            ids = toy.ids[:1, :length]
            toy.ofa.use(toy.ofa.subnet_config(width, depth))
            toy.ofa(ids, token_type_ids=paddle.zeros_like(ids))
            assert subnet_macs(config, width, depth, length) == counted["linear"] + counted["attention"], \
                (width, depth, length, counted)
        for hook in hooks:
            hook.remove()
    assert mean_macs(config, 1.0, 1.0, [5, 9]) == (subnet_macs(config, 1.0, 1.0, 5) + subnet_macs(config, 1.0, 1.0, 9)) / 2
    # BERT-base at T=128, linear layers only: the reference's 905,969,664 MACs per layer (docs/reference.md, Cost counting)
    assert layer_macs(768, 12, 64, 3072, 128)["linear"] == 905_969_664


# --- end to end on the demo's toy task --------------------------------------------------------------

def grid(out):
    results = json.loads((out / "eval_results.json").read_text())
    return {(s["width_mult"], s["depth_mult"]): s for s in results["subnets"]}


@pytest.mark.slow
def test_a_short_depth_run_improves_the_quarter_width_half_depth_subnet(toy_width_model, tmp_path):
    from visualdl import LogReader

    data_dir, width_dir = toy_width_model
    untrained, trained = tmp_path / "untrained", tmp_path / "trained"
    grid_flags = ("--width_mult_list", "0.25,1.0", "--depth_mult_list", "0.5,1.0")  # 4 subnets: a faster test
    assert main(stage_argv("depth", data_dir, width_dir, untrained, *grid_flags, "--max_steps", "1",
                           "--learning_rate", "1e-12")) == 0
    assert main(stage_argv("depth", data_dir, width_dir, trained, *grid_flags, "--max_steps", "80",
                           "--logging_steps", "40", "--learning_rate", "2e-3")) == 0
    before, after = grid(untrained), grid(trained)
    assert sorted(after) == [(0.25, 0.5), (0.25, 1.0), (1.0, 0.5), (1.0, 1.0)]
    # the 1-head, 2-layer subnet of the toy model: 0.748 -> 0.778 when this test was written
    assert after[(0.25, 0.5)]["metrics"]["acc"] > before[(0.25, 0.5)]["metrics"]["acc"] + 0.02, (before, after)
    vdl = trained / "vdl" / "depth"
    reader = LogReader(file_path=str(vdl / os.listdir(vdl)[0]))
    for tag in ("train/w0.25_d0.5/logit_loss", "train/w0.25_d0.5/hidden_loss"):
        values = [r.value for r in reader.get_data("scalar", tag)]
        assert np.mean(values[-10:]) < 0.9 * np.mean(values[:10]), (tag, values)
    info = json.loads((trained / "flexbert.json").read_text())
    assert info["depth_rule"] == "prefix" and info["stage"] == "depth"


@pytest.mark.slow
def test_depth_grid_has_every_subnet_with_macs_falling_with_width_and_depth(toy_width_model, tmp_path):
    data_dir, width_dir = toy_width_model
    out = tmp_path / "depth"
    assert main(stage_argv("depth", data_dir, width_dir, out, "--max_steps", "1")) == 0
    results = grid(out)
    assert sorted(results) == sorted((w, d) for w in (0.25, 0.5, 0.75, 1.0) for d in (0.5, 0.75, 1.0))
    macs = {key: s["macs"] for key, s in results.items()}
    assert macs[(0.25, 0.5)] < macs[(0.5, 0.5)] < macs[(1.0, 0.5)] < macs[(1.0, 0.75)] < macs[(1.0, 1.0)]


@pytest.mark.slow
def test_depth_stage_logs_every_subnet_and_its_distillation_terms(toy_width_model, tmp_path):
    from visualdl import LogReader

    data_dir, width_dir = toy_width_model
    out = tmp_path / "depth"
    assert main(stage_argv("depth", data_dir, width_dir, out, "--max_steps", "2", "--logging_steps", "2",
                           "--width_mult_list", "0.5,1.0", "--depth_mult_list", "0.5,1.0")) == 0
    vdl = out / "vdl" / "depth"
    reader = LogReader(file_path=str(vdl / os.listdir(vdl)[0]))
    tags = reader.get_tags()["scalar"]
    saved = {(s["width_mult"], s["depth_mult"]): s["metrics"]["acc"]
             for s in json.loads((out / "eval_results.json").read_text())["subnets"]}
    for w in (0.5, 1.0):
        for d in (0.5, 1.0):
            subnet = f"w{w:g}_d{d:g}"
            assert f"train/{subnet}/hidden_loss" in tags
            for term in ("loss", "logit_loss", "hidden_loss"):  # one value per step, each a real loss
                values = [r.value for r in reader.get_data("scalar", f"train/{subnet}/{term}")]
                assert len(values) == 2 and all(0 <= v < float("inf") for v in values), (term, values)
                if (w, d) != (1.0, 1.0):  # the full subnet starts as its teacher: its hidden loss may be 0
                    assert min(values) > 0, (term, values)
            # the one evaluation (step 2) is the saved model's: the curve ends at eval_results.json's figure
            (logged,) = [r.value for r in reader.get_data("scalar", f"eval/{subnet}/acc")]
            assert logged == pytest.approx(saved[(w, d)], abs=1e-6)
    assert len(grid(out)) == 4


@pytest.mark.slow
def test_final_never_replaces_a_better_model(toy_width_model, tmp_path):
    data_dir, width_dir = toy_width_model
    out = tmp_path / "final"
    # a learning rate this large wrecks every subnet, so no evaluation can beat the input
    assert main(stage_argv("final", data_dir, width_dir, out, "--max_steps", "4", "--logging_steps", "2",
                           "--learning_rate", "1.0")) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["best_step"] == 0 and results["stage"] == "final"
    info = json.loads((out / "flexbert.json").read_text())
    assert info["kept_input_model"] is True
    assert info["input_score"] == pytest.approx(sum(s["metrics"]["acc"] for s in results["subnets"]))
    original = paddle.load(os.path.join(width_dir, "model_state.pdparams"))
    kept = paddle.load(str(out / "model_state.pdparams"))
    assert original.keys() == kept.keys()
    for name in original:
        np.testing.assert_array_equal(kept[name].numpy(), original[name].numpy(), err_msg=name)


@pytest.mark.slow
def test_final_replaces_the_input_when_it_improves(toy_width_model, tmp_path):
    data_dir, width_dir = toy_width_model
    out = tmp_path / "final"
    assert main(stage_argv("final", data_dir, width_dir, out, "--max_steps", "60", "--logging_steps", "30",
                           "--learning_rate", "1e-3")) == 0
    info = json.loads((out / "flexbert.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    assert info["kept_input_model"] is False and results["best_step"] in (30, 60)
    assert sum(s["metrics"]["acc"] for s in results["subnets"]) > info["input_score"]


@pytest.mark.slow
def test_resumed_depth_run_equals_an_uninterrupted_one(toy_width_model, tmp_path, monkeypatch):
    from ofa_flexbert.app.stages.depth import GridStrategy

    data_dir, width_dir = toy_width_model
    extra = ("--max_steps", "6", "--logging_steps", "2", "--learning_rate", "5e-4", "--width_mult_list", "0.5,1.0")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(stage_argv("depth", data_dir, width_dir, whole, *extra)) == 0
    run_interrupted(monkeypatch, GridStrategy, 5, stage_argv("depth", data_dir, width_dir, broken, *extra))
    assert main(stage_argv("depth", data_dir, width_dir, broken, *extra, "--resume")) == 0
    assert_same_checkpoint(whole, broken)
    assert grid(whole) == grid(broken)


@pytest.mark.parametrize("stage,extra,message", [
    ("depth", ("--depth_rule", "odd"), "error: --depth_rule: expected one of prefix, every_other, dynabert, got 'odd'"),
    ("final", ("--data_aug",), "error: --data_aug: final fine-tuning trains on the original training data only"),
])
@pytest.mark.slow
def test_depth_and_final_refuse_bad_flags(toy_width_model, tmp_path, capsys, stage, extra, message):
    data_dir, width_dir = toy_width_model
    assert main(stage_argv(stage, data_dir, width_dir, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_final_refuses_another_depth_rule_than_the_depth_stage_used(toy_width_model, tmp_path, capsys):
    data_dir, width_dir = toy_width_model
    depth = tmp_path / "depth"
    assert main(stage_argv("depth", data_dir, width_dir, depth, "--max_steps", "1", "--width_mult_list", "1.0",
                           "--depth_mult_list", "1.0")) == 0
    capsys.readouterr()
    assert main(stage_argv("final", data_dir, str(depth), tmp_path / "final", "--depth_rule", "every_other")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --depth_rule every_other: the model in {depth} was trained with --depth_rule prefix "
                   f"(see {depth / 'flexbert.json'})")


@pytest.mark.parametrize("text", ["[]", '{"stage": "depth", "arguments": [1]}', "not json"])
def test_a_foreign_flexbert_json_is_no_depth_rule_record(tmp_path, text):
    """Only a description this toolkit wrote can refuse a rule; anything else is ignored, never a traceback."""
    from types import SimpleNamespace

    from ofa_flexbert.app.stages.depth import check_depth_rule

    (tmp_path / "flexbert.json").write_text(text)
    assert check_depth_rule(SimpleNamespace(model_dir=str(tmp_path), depth_rule="every_other")) is None


def test_grid_table_puts_depths_in_rows_and_widths_in_columns():
    from ofa_flexbert.store.outputs import SubnetResult
    from ofa_flexbert.app.report import grid_table
    from ofa_flexbert.app.report import StageReport

    results = [SubnetResult(w, d, {"acc": acc}, macs) for w, d, acc, macs in
               [(1.0, 1.0, 0.9, 400.0), (0.5, 1.0, 0.8, 200.0), (1.0, 0.5, 0.7, 200.0), (0.5, 0.5, 0.6, 100.0)]]
    results[-1].single_class = True
    table = grid_table(StageReport("depth", "sst-2", "out", "acc", results, 10, 1.0))
    assert table.splitlines() == [
        "depth sst-2: dev acc (MACs vs the full model) per width x depth",
        "           width 1        width 0.5",
        "---------  -------------  -----------------------",
        "depth 1    0.9000 (100%)  0.8000 (50%)",
        "depth 0.5  0.7000 (50%)   0.6000 (25%) one class!",
    ]


def test_evaluate_flags_a_subnet_that_predicts_one_class():
    from ofa_flexbert.glue.data import get_task
    from ofa_flexbert.train.evaluation import evaluate
    from paddlenlp.transformers import BertForSequenceClassification

    class Fixed:
        """Logits from a table: the (1.0, 1.0) subnet always says class 1, the other follows the labels."""

        model = BertForSequenceClassification(tiny_bert_config())
        subnets = [Subnet(1.0, 1.0), Subnet(0.5, 1.0)]

        def logits(self, subnet, batch):
            labels = batch["labels"].numpy()
            chosen = np.ones_like(labels) if subnet.width_mult == 1.0 else labels
            return paddle.to_tensor(np.eye(2, dtype="float32")[chosen])

    batch = {"input_ids": paddle.to_tensor([[1, 2, 3], [1, 2, 0]]), "labels": paddle.to_tensor([0, 1])}

    class Loader:
        """What evaluate reads of a data.make_loader: the dataset, the batch sampler, the collate function."""

        dataset = [{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2]}]
        batch_sampler = [[0, 1]]

        @staticmethod
        def collate_fn(rows):
            return batch

    full, half = evaluate(Fixed(), get_task("sst-2"), {"dev": Loader()})
    assert (full.single_class, full.metrics["acc"]) == (True, 0.5)
    assert (half.single_class, half.metrics["acc"]) == (False, 1.0)
    assert full.macs > half.macs > 0


def test_depth_step_runs_the_teacher_once_and_every_subnet_once():
    from ofa_flexbert.config import RunArgs
    from ofa_flexbert.glue.data import get_task
    from ofa_flexbert.app.stages.depth import GridStrategy

    toy = Toy()
    toy.student.train()
    calls = {"teacher": 0, "student": 0}
    toy.teacher.register_forward_post_hook(lambda *a: calls.__setitem__("teacher", calls["teacher"] + 1))
    toy.student.register_forward_post_hook(lambda *a: calls.__setitem__("student", calls["student"] + 1))
    args = RunArgs(width_mult_list=[0.25, 0.5, 0.75, 1.0], depth_mult_list=[0.5, 0.75, 1.0])
    strategy = GridStrategy("depth", toy.ofa, None, get_task("sst-2"), args, toy.teacher)
    batch = {"input_ids": toy.ids, "token_type_ids": toy.types, "labels": paddle.to_tensor([0, 1, 1])}
    logs = strategy.train_step(batch)
    assert calls == {"teacher": 1, "student": 12}
    assert len([k for k in logs if k.endswith("/hidden_loss")]) == 12
    assert all(p.grad is None for p in toy.teacher.parameters())
    assert not toy.teacher.training
