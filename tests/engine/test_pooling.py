"""--pooling {cls,mean}: what the classifier reads, recorded in the model and carried through the stages."""
import json
import os
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

import numpy_bert
import patches
from conftest import stage_argv
from ofa_flexbert.engine.accounting import subnet_macs
from ofa_flexbert.train.diagnostics import pooled_spread
from ofa_flexbert.store.hf_import import convert_hf_checkpoint
from ofa_flexbert.store.models import load_model
from ofa_flexbert.app.cli import main
from hf_checkpoints import HF_CONFIG, INPUT_IDS, TOKEN_TYPES, write_hf_checkpoint


@pytest.fixture
def converted(tmp_path):
    """A converted random HF classifier (2 layers, padding in row 2) and its HF-layout weights."""
    hf_dir, weights = write_hf_checkpoint(tmp_path / "hf")
    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(hf_dir, out, num_labels=3)
    return out, weights


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooled_output_and_logits_match_numpy(converted, pooling):
    """The patched forward pools as the float64 numpy BERT does: [CLS], or the unpadded tokens' mean."""
    model_dir, weights = converted
    patches.apply()
    model = load_model(model_dir, num_labels=3)
    model.bert.config.pooling = pooling
    model.eval()
    ids, types = paddle.to_tensor(INPUT_IDS), paddle.to_tensor(TOKEN_TYPES)
    with paddle.no_grad():
        _, pooled = model.bert(ids, token_type_ids=types)
        logits = model(ids, token_type_ids=types)
    _, ref_pooled = numpy_bert.bert_forward(weights, dict(HF_CONFIG, pooling=pooling), INPUT_IDS, TOKEN_TYPES)
    np.testing.assert_allclose(pooled.numpy(), ref_pooled, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits.numpy(), numpy_bert.classifier_logits(weights, ref_pooled), atol=1e-5, rtol=0)
    _, cls_pooled = numpy_bert.bert_forward(weights, HF_CONFIG, INPUT_IDS, TOKEN_TYPES)
    assert (np.abs(ref_pooled - cls_pooled).max() > 1e-2) == (pooling == "mean")  # the two really differ


def test_the_depth_check_measures_the_vector_the_model_pools(converted):
    model_dir, weights = converted
    patches.apply()
    model = load_model(model_dir, num_labels=3)
    model.bert.config.pooling = "mean"
    batch = {"input_ids": paddle.to_tensor(INPUT_IDS), "token_type_ids": paddle.to_tensor(TOKEN_TYPES)}
    spreads = pooled_spread(model, [batch])
    sequence, _ = numpy_bert.bert_forward(weights, HF_CONFIG, INPUT_IDS, TOKEN_TYPES)
    keep = (INPUT_IDS != 0)[:, :, None]
    mean = (sequence * keep).sum(axis=1) / keep.sum(axis=1)
    assert spreads[-1] == pytest.approx(mean.std(axis=0).mean(), abs=1e-5)
    assert spreads[-1] != pytest.approx(sequence[:, 0].std(axis=0).mean(), abs=1e-3)


def test_mean_pooling_adds_the_token_mean_to_the_macs():
    config = SimpleNamespace(hidden_size=384, num_attention_heads=12, num_hidden_layers=6, intermediate_size=1536,
                             num_labels=2)
    cls = subnet_macs(config, 0.5, 0.5, 100)
    config.pooling = "mean"
    assert subnet_macs(config, 0.5, 0.5, 100) - cls == 100 * 384  # a weighted sum of T vectors of size H


@pytest.mark.slow
def test_pooling_is_chosen_at_finetune_recorded_and_refused_when_it_conflicts(toy_teacher, tmp_path, capsys):
    data_dir, teacher = toy_teacher
    out = tmp_path / "mean"
    assert main(stage_argv("finetune", data_dir, teacher, out, "--pooling", "mean", "--max_steps", "2",
                           "--logging_steps", "2")) == 0
    with open(os.path.join(str(out), "config.json")) as fh:
        assert json.load(fh)["pooling"] == "mean"
    assert load_model(str(out), 2).bert.config.pooling == "mean"  # and it loads as such
    capsys.readouterr()
    assert main(stage_argv("width", data_dir, out, tmp_path / "width", "--pooling", "cls")) == 2
    assert capsys.readouterr().err == (f"error: --pooling cls: the model in {out} pools mean (its config.json); "
                                       "pooling is chosen at --stage finetune\n")
    assert not os.path.exists(tmp_path / "width")
    # the teacher records no pooling: stock BERT's [CLS]
    assert main(stage_argv("width", data_dir, teacher, tmp_path / "width", "--pooling", "mean")) == 2
    assert capsys.readouterr().err.startswith(f"error: --pooling mean: the model in {teacher} pools cls ")


@pytest.mark.slow
def test_an_unknown_pooling_is_refused(toy_teacher, tmp_path, capsys):
    data_dir, teacher = toy_teacher
    assert main(stage_argv("finetune", data_dir, teacher, tmp_path / "x", "--pooling", "max")) == 2
    assert capsys.readouterr().err == "error: --pooling: expected one of cls, mean, got 'max'\n"
