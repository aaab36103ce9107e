"""The depth stage's pre-training check: subnets whose [CLS] does not depend on the input."""
import json
import logging
import shutil

import numpy as np
import paddle
import pytest

from conftest import stage_argv, tiny_bert_config
from ofa_flexbert.train.diagnostics import SPREAD_WARNING_SHARE, pooled_spread, first_batches, shallow_depth_check
from ofa_flexbert.engine.routes import depth_layers
from ofa_flexbert.app.cli import main

pytestmark = pytest.mark.usefixtures("patched")


def _model(layers: int = 4):
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=layers))
    model.eval()
    return model


def _batches(count: int = 2, size: int = 8):
    """Random sentences that all start with the same token, as [CLS] does."""
    rng = np.random.RandomState(1)
    batches = []
    for _ in range(count):
        ids = rng.randint(5, 40, size=(size, 9)).astype("int64")
        ids[:, 0] = 2
        batches.append({"input_ids": paddle.to_tensor(ids), "token_type_ids": paddle.zeros_like(paddle.to_tensor(ids))})
    return batches


def _silence_values(state: dict, layers: list[int], prefix: str = "") -> None:
    """Zero the value projections of ``layers``: attention then returns the value bias for every
    token (softmax weights sum to 1), so a [CLS] that enters such a layer constant leaves it constant."""
    for i in layers:
        name = f"{prefix}bert.encoder.layers.{i}.self_attn.v_proj.weight"
        state[name] = paddle.zeros_like(paddle.to_tensor(state[name]))


def _silenced(layers: int, silent: list[int]):
    """A random ``layers``-layer BERT whose ``silent`` layers have zero value projections."""
    model = _model(layers)
    state = model.state_dict()
    _silence_values(state, silent)
    model.set_state_dict(state)
    return model


def test_pooled_spread_is_zero_exactly_where_cls_cannot_depend_on_the_input():
    model = _silenced(4, [0, 1])
    spread = pooled_spread(model, _batches())
    assert len(spread) == 5  # embeddings, then 4 layers
    assert max(spread[:3]) < 1e-6  # the [CLS] embedding is one vector; layers 0 and 1 cannot mix others in
    assert min(spread[3:]) > 1e-3  # layer 2 attends to the other tokens again (random init: small weights)
    # only the layers run count: every_other at d 0.5 runs layers 1 and 3
    assert len(pooled_spread(model, _batches(), depth_layers(4, 0.5, "every_other"))) == 3


def test_a_prefix_that_stops_in_the_silent_layers_is_warned_about_and_every_other_is_not():
    model = _silenced(4, [0, 1])
    shares, warning = shallow_depth_check(model, _batches(), [0.5, 0.75, 1.0], "prefix")
    assert shares[1.0] == 1.0 and shares[0.5] < 1e-5 and shares[0.75] > SPREAD_WARNING_SHARE
    assert warning.startswith("prefix depth rule: the [CLS] a subnet hands its classifier varies across inputs only "
                              "0.0% at depth 0.5 (layers [0, 1]) as much as at full depth (warning below 5%), so "
                              "these subnets may predict one class")
    assert warning.endswith("this backbone puts little into it before its last layers; fine-tune the teacher with "
                            "--pooling mean (the fix measured on all-MiniLM-L6-v2, docs/benchmarks.md), or use "
                            "--balance_subnet_gradients (keeps the prefix rule) or --depth_rule every_other "
                            '(docs/design.md, "Depth")')
    _, balanced = shallow_depth_check(model, _batches(), [0.5, 1.0], "prefix", balanced=True)
    assert "; --balance_subnet_gradients is on; watch these subnets' dev metrics (docs/design.md" in balanced
    shares, warning = shallow_depth_check(model, _batches(), [0.5, 0.75, 1.0], "every_other")
    assert warning is None and min(shares.values()) > SPREAD_WARNING_SHARE


def test_every_degenerate_depth_is_named_and_every_other_is_not_told_to_use_every_other():
    model = _silenced(6, [0, 1, 2, 3, 4])  # only the last layer lets [CLS] depend on the input
    shares, warning = shallow_depth_check(model, _batches(), [0.5, 0.75, 1.0], "prefix")
    assert max(shares[0.5], shares[0.75]) < 1e-5
    assert "only 0.0% at depth 0.5 (layers [0, 1, 2]), 0.0% at depth 0.75 (layers [0, 1, 2, 3]) as much" in warning
    # every_other: d 0.5 runs layers 1, 3, 5 (ends at the last layer), d 0.75 runs 0, 1, 3, 4 (does not)
    shares, warning = shallow_depth_check(model, _batches(), [0.5, 0.75, 1.0], "every_other")
    assert shares[0.5] > SPREAD_WARNING_SHARE and shares[0.75] < 1e-5
    assert "only 0.0% at depth 0.75 (layers [0, 1, 3, 4]) as much" in warning
    assert warning.endswith("; fine-tune the teacher with --pooling mean (the fix measured on all-MiniLM-L6-v2, "
                            'docs/benchmarks.md), or use --balance_subnet_gradients (docs/design.md, "Depth")')


def test_the_check_is_skipped_without_any_spread_at_full_depth():
    shares, warning = shallow_depth_check(_model(), _batches(count=1, size=1), [0.5, 1.0], "prefix")
    assert shares == {} and warning == ("the depth check is skipped: the full model's [CLS] is the same for all "
                                        "1 dev inputs it was given")


def test_pooled_spread_leaves_the_model_in_its_mode_and_the_check_reads_whole_batches():
    model = _model()
    model.train()
    pooled_spread(model, _batches())
    assert model.training
    model.eval()
    pooled_spread(model, _batches())
    assert not model.training
    assert len(first_batches(_batches(count=5, size=8), examples=17)) == 3  # 8 + 8 < 17 <= 24
    assert len(first_batches(_batches(count=2, size=8), examples=256)) == 2  # a small dev set: all of it


def test_a_random_bert_passes_the_check():
    shares, warning = shallow_depth_check(_model(), _batches(), [0.25, 0.5, 0.75, 1.0], "prefix")
    assert warning is None and min(shares.values()) > 0.3, shares


@pytest.mark.slow
def test_depth_stage_warns_and_records_the_shares(toy_width_model, tmp_path, caplog):
    data_dir, width_dir = toy_width_model
    silent = tmp_path / "silent"
    shutil.copytree(width_dir, silent)
    state = paddle.load(str(silent / "model_state.pdparams"))
    layers = json.loads((silent / "config.json").read_text())["num_hidden_layers"]
    _silence_values(state, depth_layers(layers, 0.5))
    paddle.save(state, str(silent / "model_state.pdparams"))
    out = tmp_path / "depth"
    with caplog.at_level(logging.WARNING, logger="ofa_flexbert"):
        assert main(stage_argv("depth", data_dir, silent, out, "--max_steps", "1", "--logging_steps", "1")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("prefix depth rule: ") and " at depth 0.5 (layers " in m for m in warnings), warnings
    shares = json.loads((out / "flexbert.json").read_text())["cls_spread_share"]
    assert set(shares) == {"0.5", "0.75", "1"} and shares["0.5"] < 1e-4
