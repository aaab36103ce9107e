"""Stage ``finetune`` and the CLI around it: learning, the output contract, bad input."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from ofa_flexbert.app.demo import DEMO_SENTENCES, synthetic_example, write_synthetic_task, write_tiny_bert
from ofa_flexbert.app.cli import main

FAST = ["--per_gpu_train_batch_size", "32", "--per_gpu_eval_batch_size", "200", "--max_seq_length", "40"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The demo's synthetic task (small) and its random tiny BERT."""
    root = tmp_path_factory.mktemp("toy")
    data_dir, model_dir = str(root / "SST-2"), str(root / "pretrained")
    write_synthetic_task(data_dir, seed=0, num_train=1200, num_dev=400)
    write_tiny_bert(model_dir, seed=0)
    return data_dir, model_dir


def finetune_argv(data_dir, model_dir, out, *extra):
    return ["--task", "sst-2", "--stage", "finetune", "--config", os.path.join(ROOT, "configs", "demo.yaml"),
            "--data_dir", data_dir, "--model_dir", model_dir, "--output_dir", str(out), *FAST, *extra]


def dev_accuracy(model_dir, data_dir):
    """Independent check: reload the saved model and score dev with plain numpy."""
    import paddle
    from ofa_flexbert.glue.data import encode, get_task, make_loader, read_split
    from ofa_flexbert.store.models import load_model, load_tokenizer

    task = get_task("sst-2")
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, 2)
    model.eval()
    loader = make_loader(encode(read_split(task, data_dir, "dev"), task, tokenizer, 40), tokenizer, 200)
    hits = total = 0
    with paddle.no_grad():
        for batch in loader:
            pred = model(batch["input_ids"], token_type_ids=batch["token_type_ids"]).numpy().argmax(-1)
            hits += int((pred == batch["labels"].numpy()).sum())
            total += len(pred)
    return hits / total


def test_synthetic_task_is_balanced_and_follows_its_rule():
    import random

    rng = random.Random(3)
    examples = [synthetic_example(rng) for _ in range(2000)]
    positives = sum(label for _, label in examples) / len(examples)
    assert 0.4 < positives < 0.6
    from ofa_flexbert.app.demo import NEGATION, NEGATIVE, POSITIVE

    def rule(sentence: str) -> int:  # the task's definition, computed independently from the words
        words, total = sentence.split(), 0
        for i, word in enumerate(words):
            if word in POSITIVE or word in NEGATIVE:
                sign = 1 if word in POSITIVE else -1
                total += -sign if i > 0 and words[i - 1] == NEGATION else sign
        return int(total > 0)

    assert all(rule(s) == y for s, y in examples)
    assert sum(NEGATION in s.split() for s, _ in examples) > 500  # the flip is exercised


@pytest.mark.slow
def test_finetune_learns_and_writes_the_output_contract(toy, tmp_path):
    data_dir, model_dir = toy
    before = dev_accuracy(model_dir, data_dir)
    out = tmp_path / "teacher"
    assert main(finetune_argv(data_dir, model_dir, out, "--max_steps", "150", "--logging_steps", "50")) == 0
    for name in ("config.json", "model_state.pdparams", "vocab.txt", "flexbert.json", "eval_results.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results) == {"task", "stage", "metric", "subnets", "best_step"}
    assert (results["task"], results["stage"], results["metric"]) == ("sst-2", "finetune", "acc")
    assert results["best_step"] in (50, 100, 150)
    [subnet] = results["subnets"]
    assert (subnet["width_mult"], subnet["depth_mult"]) == (1.0, 1.0)
    after = dev_accuracy(str(out), data_dir)
    assert after == pytest.approx(subnet["metrics"]["acc"], abs=1e-9)  # the saved model is the reported one
    assert after > before + 0.15, (before, after)
    info = json.loads((out / "flexbert.json").read_text())
    assert info["stage"] == "finetune" and info["task"] == "sst-2"
    assert info["arguments"]["max_steps"] == 150 and "paddlenlp" in info["versions"]
    assert info["source_model"] == os.path.abspath(model_dir)
    vdl = out / "vdl" / "finetune"
    records = [f for f in os.listdir(vdl) if f.startswith("vdlrecords")]
    assert records
    from visualdl import LogReader

    reader = LogReader(file_path=str(vdl / records[0]))
    tags = set(reader.get_tags()["scalar"])
    assert {"train/loss", "train/learning_rate", "eval/w1_d1/acc"} <= tags
    assert [r.id for r in reader.get_data("scalar", "eval/w1_d1/acc")] == [50, 100, 150]


@pytest.mark.slow
def test_finetuned_model_is_a_valid_model_dir_for_the_next_stage(toy, tmp_path):
    """A stage output loads as --model_dir with its trained classifier (not a fresh one)."""
    data_dir, model_dir = toy
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(finetune_argv(data_dir, model_dir, first, "--max_steps", "150", "--logging_steps", "150")) == 0
    trained = json.loads((first / "eval_results.json").read_text())["subnets"][0]["metrics"]["acc"]
    assert trained > 0.65
    # A near-zero learning rate keeps the weights: the chained run must start where the first ended.
    assert main(finetune_argv(data_dir, str(first), second, "--max_steps", "5", "--logging_steps", "5",
                              "--learning_rate", "1e-12", "--warmup_steps", "0")) == 0
    chained = json.loads((second / "eval_results.json").read_text())["subnets"][0]["metrics"]["acc"]
    assert chained == pytest.approx(trained, abs=0.01)


# --- bad input: one line, exit 2, nothing previously written is lost --------------------------------

def run_cli(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_ofa_glue.py"), *argv], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2_without_traceback(toy, tmp_path):
    data_dir, model_dir = toy
    result = run_cli("--task", "nope", "--stage", "finetune")
    assert result.returncode == 2
    # the whole of stderr: no start-up noise from the stack before it either (patches/quiet_imports.py)
    assert result.stderr == ("error: unknown task 'nope'; expected one of: cola, sst-2, "
                             "mrpc, sts-b, qqp, mnli, qnli, rte, wnli\n")


@pytest.mark.slow
def test_a_stage_run_from_the_script_prints_each_of_our_lines_once_in_our_format(toy, tmp_path):
    """The script configures the console before the stage imports paddle, whose root handler would print our
    lines a second time in its own format ("[time] [    INFO] file:line - ..."); each stage keeps it off
    them once paddle is in (stages.begin.setup)."""
    data_dir, model_dir = toy
    result = run_cli(*finetune_argv(data_dir, model_dir, tmp_path / "out", "--max_steps", "1", "--logging_steps", "1"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "INFO]" in line or " - finetune" in line] == []
    assert any(line.startswith("MKL fast path: ") for line in lines)  # our first line, printed once
    assert sum(line.startswith("MKL fast path: ") for line in lines) == 1


def write_rows(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("sentence\tlabel\n" + "".join(r + "\n" for r in rows))


@pytest.mark.slow
def test_bad_data_fails_before_anything_in_output_dir_is_touched(toy, tmp_path, capsys):
    """Even told to replace an earlier run (--overwrite_output_dir), a run with bad input touches nothing."""
    data_dir, model_dir = toy
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_state.pdparams").write_bytes(b"an earlier good model")
    (out / "eval_results.json").write_text('{"earlier": true}')
    bad = str(tmp_path / "bad" / "SST-2")
    write_rows(os.path.join(bad, "train.tsv"), ["good movie\t1", "only one column", "bad\t0"])
    write_rows(os.path.join(bad, "dev.tsv"), ["fine\t1"])
    assert main(finetune_argv(bad, model_dir, out, "--overwrite_output_dir")) == 2
    assert capsys.readouterr().err.strip() == (f"error: {bad}/train.tsv:3: expected at least 2 tab-separated "
                                               f"columns, found 1")
    write_rows(os.path.join(bad, "train.tsv"), ["good movie\t1", "bad\tmaybe"])
    assert main(finetune_argv(bad, model_dir, out, "--overwrite_output_dir")) == 2
    assert capsys.readouterr().err.strip() == (f"error: {bad}/train.tsv:3: unknown label 'maybe' for task sst-2; "
                                               f"expected one of: 0, 1")
    assert main(finetune_argv(data_dir, str(tmp_path / "missing"), out, "--overwrite_output_dir")) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --model_dir {tmp_path / 'missing'}")
    assert main(finetune_argv(str(tmp_path / "nodata"), model_dir, out, "--overwrite_output_dir")) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'nodata'}/train.tsv: no such file")
    assert sorted(os.listdir(out)) == ["eval_results.json", "model_state.pdparams"]
    assert (out / "model_state.pdparams").read_bytes() == b"an earlier good model"
    assert (out / "eval_results.json").read_text() == '{"earlier": true}'


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["finetune", "width"])
def test_bad_data_is_reported_before_the_model_is_loaded(toy, tmp_path, capsys, monkeypatch, stage):
    """Reading the data is quick and loading a model is not: a typo in --data_dir must not wait for it."""
    import importlib

    data_dir, model_dir = toy
    module = importlib.import_module(f"ofa_flexbert.app.stages.{stage}")

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was read")

    monkeypatch.setattr(module, "load_model", load_model)
    argv = finetune_argv(str(tmp_path / "nodata"), model_dir, tmp_path / "out")
    argv[argv.index("--stage") + 1] = stage
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'nodata'}/train.tsv: no such file")


@pytest.mark.slow
def test_model_dir_without_vocabulary_is_refused(toy, tmp_path, capsys):
    import shutil

    data_dir, model_dir = toy
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    os.remove(broken / "vocab.txt")
    assert main(finetune_argv(data_dir, str(broken), tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --model_dir {broken}") and "vocab.txt" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_runs_every_implemented_stage_with_its_own_config_section(tmp_path, capsys):
    assert main(["--demo", "--output_dir", str(tmp_path), "--max_steps", "10"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["stage", "task"]
    assert "finetune  sst-2" in table
    assert any(line.split()[:3] == ["gate", "sst-2", "gated"] for line in table.splitlines())
    assert (tmp_path / "gate" / "gates.json").exists()
    # search chose a setting on the gated model, and infer (the last stage) ran it on dev
    chosen = json.loads((tmp_path / "search" / "inference_config.json").read_text())["sst-2"]
    inferred = json.loads((tmp_path / "infer" / "infer_results.json").read_text())
    assert (inferred["mode"], inferred["width_mult_list"]) == (chosen["mode"], chosen["width_mult_list"])
    assert json.loads((tmp_path / "infer" / "flexbert.json").read_text())["source_model"] == str(tmp_path / "gate")
    assert "search sst-2: Pareto front chosen on the search half of dev" in table
    info = json.loads((tmp_path / "finetune" / "flexbert.json").read_text())
    # configs/demo.yaml's stages.finetune section applies under --stage all (not the 2e-5 default)
    assert info["arguments"]["learning_rate"] == 1e-3 and info["arguments"]["stage"] == "finetune"
    assert info["arguments"]["max_steps"] == 10
    assert info["source_model"] == str(tmp_path / "pretrained")
    # it ends deployed: one subnet of the final model exported, checked, and labelling raw sentences
    manifest = json.loads((tmp_path / "export" / "w0.5_d0.75" / "manifest.json").read_text())
    assert manifest["source_model"] == str(tmp_path / "final") and manifest["check"]["max_abs_logit_diff"] <= 1e-5
    samples = table[table.index("predictor on "):].splitlines()[3:]
    assert [line.split("  ")[0] for line in samples] == list(DEMO_SENTENCES)
    assert all(line.split()[-2] in ("0", "1") and 0.5 <= float(line.split()[-1]) <= 1 for line in samples)


def test_demo_with_a_bad_flag_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--demo", "--output_dir", str(out), "--learning_rate", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --learning_rate: must be a positive number, got -1"
    assert not out.exists()  # the demo's data and model used to be written before the flags were checked


@pytest.mark.slow
def test_group_by_length_changes_the_batches_and_resumes_exactly(toy_teacher, tmp_path, monkeypatch):
    """--group_by_length reaches the training loader (other weights than the default batches) and an
    interrupted run resumes to the uninterrupted one's weights (its order is a function of seed and epoch)."""
    import numpy as np
    import paddle

    from conftest import assert_same_checkpoint, run_interrupted, stage_argv
    from ofa_flexbert.app.stages.finetune import FinetuneStrategy

    data_dir, teacher = toy_teacher
    extra = ("--max_steps", "6", "--logging_steps", "3", "--learning_rate", "5e-4")
    plain, whole, broken = tmp_path / "plain", tmp_path / "whole", tmp_path / "broken"
    assert main(stage_argv("finetune", data_dir, teacher, plain, *extra)) == 0
    assert main(stage_argv("finetune", data_dir, teacher, whole, *extra, "--group_by_length")) == 0
    run_interrupted(monkeypatch, FinetuneStrategy, 5, stage_argv("finetune", data_dir, teacher, broken, *extra,
                                                                 "--group_by_length"))
    assert json.loads((broken / "checkpoint" / "state.json").read_text())["step"] == 3
    assert main(stage_argv("finetune", data_dir, teacher, broken, *extra, "--group_by_length", "--resume")) == 0
    assert_same_checkpoint(whole, broken)
    a = paddle.load(str(plain / "checkpoint" / "model.pdparams"))
    b = paddle.load(str(whole / "checkpoint" / "model.pdparams"))
    assert max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a) > 1e-4
    assert json.loads((whole / "flexbert.json").read_text())["arguments"]["group_by_length"] is True


@pytest.mark.slow
def test_gradient_accumulation_makes_the_update_of_the_larger_batch(toy, tmp_path):
    """Two optimizer steps at batch 4 with --gradient_accumulation_steps 2 leave the weights of two steps at
    batch 8 (fixed order, no dropout; the same 16 examples in the same groups)."""
    from conftest import assert_same_checkpoint, without_dropout
    from ofa_flexbert.config import RunArgs
    from ofa_flexbert.train.loop import total_steps

    data_dir, pretrained = toy
    model = without_dropout(pretrained, tmp_path / "model")
    # adam_epsilon 1: the update is about linear in the gradient, so a missing 1/k would show (Adam is
    # otherwise nearly scale-invariant)
    common = ["--no-shuffle", "--max_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-2", "--adam_epsilon", "1"]
    assert main(finetune_argv(data_dir, model, tmp_path / "big", *common, "--per_gpu_train_batch_size", "8")) == 0
    assert main(finetune_argv(data_dir, model, tmp_path / "acc", *common, "--per_gpu_train_batch_size", "4",
                              "--gradient_accumulation_steps", "2")) == 0
    assert_same_checkpoint(tmp_path / "big", tmp_path / "acc", atol=2e-6)
    state = json.loads((tmp_path / "acc" / "checkpoint" / "state.json").read_text())
    assert (state["step"], state["batch"]) == (2, 4)  # two optimizer steps, four batches read
    # an epoch of 10 batches at k = 3 is 4 steps (the last group has one batch)
    assert total_steps(RunArgs(gradient_accumulation_steps=3, num_train_epochs=2.0), 10) == 8
