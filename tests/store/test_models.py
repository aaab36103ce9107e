"""Model dirs: HF import checked against an independent numpy BERT, error messages, atomic saves.

The HF checkpoints here are written by the test itself (numpy + safetensors, HF names,
torch layout), so nothing is downloaded and the reference (tests/numpy_bert.py) shares
no code with the converter or with Paddle.
"""

import hashlib
import json
import os

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

import numpy_bert
from hf_checkpoints import HF_CONFIG, INPUT_IDS, TOKEN_TYPES, VOCAB, bare_config, hf_weights, write_hf_checkpoint
from ofa_flexbert.errors import UserError
from ofa_flexbert.store.hf_import import convert_hf_checkpoint
from ofa_flexbert.store.models import check_model_dir, load_model, load_tokenizer, save_model



def paddle_outputs(model):
    model.eval()
    ids, types = paddle.to_tensor(INPUT_IDS), paddle.to_tensor(TOKEN_TYPES)
    with paddle.no_grad():
        seq, pooled = model.bert(ids, token_type_ids=types)
        logits = model(ids, token_type_ids=types)
    return seq.numpy(), pooled.numpy(), logits.numpy()


def tree_digest(path):
    """{relative path: sha256} of every file under path."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


# --------------------------------------------------------------------------- conversion vs numpy


def test_convert_sequence_classification_checkpoint_matches_numpy(tmp_path):
    hf_dir, weights = write_hf_checkpoint(tmp_path / "hf", tokenizer_config={"do_lower_case": False,
                                                                              "model_max_length": 512})
    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(hf_dir, out, num_labels=3)

    assert {"config.json", "model_state.pdparams", "vocab.txt", "tokenizer_config.json",
            "special_tokens_map.json"} <= set(os.listdir(out))
    check_model_dir(out)
    model = load_model(out, num_labels=3)
    # HF config values win over paddlenlp defaults (type_vocab_size 16, eps 1e-5 of nn.LayerNorm).
    assert list(model.bert.embeddings.token_type_embeddings.weight.shape) == [2, 32]
    assert model.bert.embeddings.layer_norm._epsilon == pytest.approx(1e-12)
    assert model.bert.encoder.layers[1].norm2._epsilon == pytest.approx(1e-12)

    seq, pooled, logits = paddle_outputs(model)
    ref_seq, ref_pooled = numpy_bert.bert_forward(weights, HF_CONFIG, INPUT_IDS, TOKEN_TYPES, prefix="bert.")
    ref_logits = numpy_bert.classifier_logits(weights, ref_pooled)
    assert np.abs(ref_seq).max() > 0.5 and np.abs(ref_logits).max() > 0.1  # outputs are not trivially small
    np.testing.assert_allclose(seq, ref_seq, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=0)

    tok = load_tokenizer(out)
    assert tok.do_lower_case is False  # kept from the HF tokenizer_config.json
    assert tok.tokenize("Hello World") == ["Hello", "World"]
    assert tok.pad_token_id == 0 and tok.model_max_length == 64  # capped at max_position_embeddings


def test_convert_bare_bertmodel_checkpoint_matches_numpy(tmp_path):
    config = bare_config()
    hf_dir, weights = write_hf_checkpoint(tmp_path / "hf", config=config)
    assert not any(k.startswith(("bert.", "classifier.")) for k in weights)  # sentence-transformers style
    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(hf_dir, out)  # default num_labels: irrelevant without a classifier

    tok = load_tokenizer(out)
    assert tok.do_lower_case is True  # no tokenizer_config.json: BERT's default
    # No classifier was saved, so any task size loads; the head is freshly initialised.
    for num_labels in (2, 5):
        model = load_model(out, num_labels=num_labels)
        seq, pooled, logits = paddle_outputs(model)
        assert logits.shape == (2, num_labels)
        ref_seq, ref_pooled = numpy_bert.bert_forward(weights, config, INPUT_IDS, TOKEN_TYPES, prefix="")
        np.testing.assert_allclose(seq, ref_seq, atol=1e-5, rtol=0)
        np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("modes,recorded,warned", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean", False),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls", False),
    ({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}, "cls", True),
    (None, "cls", False),  # a plain HF checkpoint: no modules.json
])
def test_convert_records_the_pooling_of_a_sentence_transformers_checkpoint(tmp_path, caplog, modes, recorded, warned):
    """all-MiniLM-L6-v2 ships modules.json and 1_Pooling/config.json (mean): the model directory records it,
    so --stage finetune pools the mean without --pooling (check_pooling reads what convert wrote)."""
    import logging

    from ofa_flexbert.store.models import recorded_pooling

    config = bare_config()
    hf_dir, _ = write_hf_checkpoint(tmp_path / "hf", config=config)
    if modes is not None:
        with open(os.path.join(hf_dir, "modules.json"), "w") as f:
            json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                       {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}], f)
        os.makedirs(os.path.join(hf_dir, "1_Pooling"))
        with open(os.path.join(hf_dir, "1_Pooling", "config.json"), "w") as f:
            json.dump({"word_embedding_dimension": 32, **modes}, f)
    out = str(tmp_path / "paddle")
    with caplog.at_level(logging.WARNING, logger="ofa_flexbert"):
        convert_hf_checkpoint(hf_dir, out)
    assert recorded_pooling(out) == recorded
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f).get("pooling") == (recorded if modes is not None and not warned else None)
    assert any("pooling_mode_max_tokens is not supported" in r.getMessage() for r in caplog.records) is warned


def test_convert_refuses_a_modules_json_that_is_not_a_list_of_modules(tmp_path):
    hf_dir, _ = write_hf_checkpoint(tmp_path / "hf", config=bare_config())
    with open(os.path.join(hf_dir, "modules.json"), "w") as f:
        f.write('{"idx": 0}')
    with pytest.raises(UserError) as info:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "paddle"))
    assert str(info.value) == f"--hf_dir {hf_dir}: modules.json must hold a JSON list, got dict"
    assert not os.path.exists(tmp_path / "paddle")  # nothing written


def test_convert_sharded_checkpoint_with_legacy_layernorm_names(tmp_path):
    """model.safetensors.index.json + shards, and old LayerNorm.gamma/beta names, give the same model."""
    hf_dir, weights = write_hf_checkpoint(tmp_path / "hf")
    os.remove(os.path.join(hf_dir, "model.safetensors"))
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in weights.items()}
    names = sorted(legacy)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_file({k: legacy[k] for k in keys}, os.path.join(hf_dir, shard), metadata={"format": "pt"})
    with open(os.path.join(hf_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}, f)

    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(hf_dir, out, num_labels=3)
    seq, pooled, logits = paddle_outputs(load_model(out, num_labels=3))
    ref_seq, ref_pooled = numpy_bert.bert_forward(weights, HF_CONFIG, INPUT_IDS, TOKEN_TYPES, prefix="bert.")
    np.testing.assert_allclose(seq, ref_seq, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits, numpy_bert.classifier_logits(weights, ref_pooled), atol=1e-5, rtol=0)


def test_convert_leaves_hf_dir_untouched(tmp_path):
    hf_dir, _ = write_hf_checkpoint(tmp_path / "hf", tokenizer_config={"do_lower_case": True})
    before = tree_digest(hf_dir)
    convert_hf_checkpoint(hf_dir, str(tmp_path / "paddle"), num_labels=3)
    assert tree_digest(hf_dir) == before
    assert sorted(before) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    # ... and nothing was left beside the output either (the temporary save dir is gone).
    assert sorted(os.listdir(tmp_path)) == ["hf", "paddle"]


# --------------------------------------------------------------------------- errors


def test_convert_errors(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(missing, str(tmp_path / "out"))
    assert str(e.value) == f"--hf_dir {missing}: directory not found"

    hf_dir, _ = write_hf_checkpoint(tmp_path / "hf")
    os.remove(os.path.join(hf_dir, "config.json"))
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"))
    assert str(e.value) == f"--hf_dir {hf_dir}: no config.json (expected a HuggingFace BERT checkpoint)"

    hf_dir, _ = write_hf_checkpoint(tmp_path / "roberta", config=dict(HF_CONFIG, model_type="roberta"))
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"))
    assert str(e.value) == f"--hf_dir {hf_dir}: config.json has model_type 'roberta', expected 'bert'"

    hf_dir, _ = write_hf_checkpoint(tmp_path / "noweights")
    os.remove(os.path.join(hf_dir, "model.safetensors"))
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"))
    assert str(e.value) == f"--hf_dir {hf_dir}: no model weights (expected model.safetensors or pytorch_model.bin)"

    hf_dir, _ = write_hf_checkpoint(tmp_path / "novocab")
    os.remove(os.path.join(hf_dir, "vocab.txt"))
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"))
    assert str(e.value) == f"--hf_dir {hf_dir}: no vocab.txt (the tokenizer's WordPiece vocabulary)"

    # A classifier fine-tuned for 3 labels is not silently replaced for a 2-label task.
    hf_dir, _ = write_hf_checkpoint(tmp_path / "three")
    with pytest.raises(UserError) as e:
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"), num_labels=2)
    assert str(e.value) == (f"--hf_dir {hf_dir}: its classifier has 3 labels but num_labels is 2 "
                            "(a checkpoint fine-tuned for another task?)")

    # Weights that do not fit config.json (here: a layer missing) are an error, not a random init.
    cfg3 = dict(HF_CONFIG, num_hidden_layers=3)
    hf_dir, _ = write_hf_checkpoint(tmp_path / "short", config=cfg3, weights=hf_weights(HF_CONFIG))
    with pytest.raises(UserError, match=r"lacks 16 BERT tensor\(s\) that config.json needs"):
        convert_hf_checkpoint(hf_dir, str(tmp_path / "out"), num_labels=3)

    # Values of the wrong type or range name the key (they used to raise ValueError / ZeroDivisionError).
    for key, value, expected in (("hidden_size", "abc", "an integer >= 1"),
                                 ("num_attention_heads", 0, "an integer >= 1"),
                                 ("layer_norm_eps", "small", "a non-negative number")):
        hf_dir, _ = write_hf_checkpoint(tmp_path / f"bad-{key}", config=dict(HF_CONFIG, **{key: value}),
                                        weights=hf_weights(HF_CONFIG))
        with pytest.raises(UserError) as e:
            convert_hf_checkpoint(hf_dir, str(tmp_path / "out"), num_labels=3)
        assert str(e.value) == f"--hf_dir {hf_dir}: config.json has {key} {value!r}; expected {expected}"

    with pytest.raises(UserError, match="must not be --hf_dir or inside it"):
        convert_hf_checkpoint(hf_dir, hf_dir)
    assert not os.path.exists(tmp_path / "out")  # no failed conversion wrote anything


def test_check_model_dir_errors(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(UserError) as e:
        check_model_dir(missing)
    assert str(e.value) == f"--model_dir {missing}: directory not found"
    with pytest.raises(UserError) as e:  # callers load the tokenizer first: same message
        load_tokenizer(missing)
    assert str(e.value) == f"--model_dir {missing}: directory not found"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        check_model_dir(str(empty), flag="--teacher_dir")
    assert str(e.value) == (f"--teacher_dir {empty}: no config.json "
                            "(expected a model directory written by save_pretrained)")

    # An HF checkpoint passed where a Paddle dir is expected gets the convert command.
    hf_dir, _ = write_hf_checkpoint(tmp_path / "hf")
    hint = f"convert it first: python run_ofa_glue.py convert --hf_dir {hf_dir} --output_dir <new dir>"
    with pytest.raises(UserError) as e:
        check_model_dir(hf_dir)
    assert str(e.value) == f"--model_dir {hf_dir}: model.safetensors is a HuggingFace checkpoint, {hint}"
    os.replace(os.path.join(hf_dir, "model.safetensors"), os.path.join(hf_dir, "pytorch_model.bin"))
    with pytest.raises(UserError) as e:
        check_model_dir(hf_dir)
    assert str(e.value) == f"--model_dir {hf_dir}: pytorch_model.bin is a HuggingFace checkpoint, {hint}"
    os.remove(os.path.join(hf_dir, "pytorch_model.bin"))
    with pytest.raises(UserError) as e:
        check_model_dir(hf_dir)
    assert str(e.value) == (f"--model_dir {hf_dir}: no model weights "
                            "(expected model_state.pdparams or model.safetensors)")

    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(write_hf_checkpoint(tmp_path / "hf2")[0], out, num_labels=3)
    os.remove(os.path.join(out, "vocab.txt"))
    with pytest.raises(UserError) as e:
        check_model_dir(out)
    assert str(e.value) == f"--model_dir {out}: no vocab.txt (expected the tokenizer files saved beside the model)"


def test_load_model_rejects_other_task_classifier(tmp_path):
    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(write_hf_checkpoint(tmp_path / "hf")[0], out, num_labels=3)
    with pytest.raises(UserError) as e:
        load_model(out, num_labels=2)
    assert str(e.value) == (f"--model_dir {out}: its classifier has 3 labels but the task needs 2 "
                            "(a model fine-tuned for another task?)")


def test_load_model_rejects_weights_that_do_not_fit_config(tmp_path):
    out = str(tmp_path / "paddle")
    convert_hf_checkpoint(write_hf_checkpoint(tmp_path / "hf")[0], out, num_labels=3)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = 3
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(UserError, match=r"model_state.pdparams lacks 16 tensor\(s\) that config.json needs"):
        load_model(out, num_labels=3)


# --------------------------------------------------------------------------- atomic save


def test_save_model_failure_keeps_previous_model(tmp_path, tiny_bert):
    from paddlenlp.transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(str(vocab))
    out = str(tmp_path / "model")
    save_model(tiny_bert, tok, out)
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("kept")
    before = tree_digest(out)

    def broken_save_pretrained(save_dir, *args, **kwargs):
        with open(os.path.join(save_dir, "model_state.pdparams"), "wb") as f:
            f.write(b"partial")  # half a file, then the process "dies"
        raise KeyboardInterrupt("interrupted while saving")

    with paddle.no_grad():
        tiny_bert.classifier.bias.set_value(tiny_bert.classifier.bias + 1.0)
    tiny_bert.save_pretrained = broken_save_pretrained
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_bert, tok, out)
    assert tree_digest(out) == before  # the good model_state.pdparams is byte-identical
    assert sorted(os.listdir(tmp_path)) == ["model", "vocab.txt"]  # temp dir cleaned up

    # A successful save replaces the model, keeps unrelated files, drops a stale other-format weights file.
    del tiny_bert.save_pretrained
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(b"stale")
    save_model(tiny_bert, tok, out)
    assert os.path.exists(os.path.join(out, "notes.txt"))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    reloaded = load_model(out, num_labels=2)
    np.testing.assert_array_equal(reloaded.classifier.bias.numpy(), tiny_bert.classifier.bias.numpy())
    assert tree_digest(out)["model_state.pdparams"] != before["model_state.pdparams"]

