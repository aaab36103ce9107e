"""The reference README's training command lines (seeds/000: width, depth, final fine-tuning) run here with
only the script name changed -- paths filled in and ``--max_steps`` added for time -- and final fine-tuning
in place keeps its input unless it does better."""
import json
import os
import shlex
import shutil
import string

import numpy as np
import paddle
import pytest

from conftest import ROOT
from ofa_flexbert.app.cli import main

# Verbatim from the reference README, after "python run_glue.py \".
WIDTH = r"""--model_type bert \
--task_name $TASK \
--do_train \
--data_dir $DATA_DIR \
--model_dir $BERT_DIR \
--output_dir $W_BERT \
--max_seq_length 128 \
--learning_rate 2e-5 \
--per_gpu_train_batch_size 32 \
--per_gpu_eval_batch_size 32 \
--num_train_epochs 3 \
--width_mult_list 0.25,0.5,0.75,1.0 \
--depth_mult_list 1.0 \
--width_lambda1 1.0 \
--width_lambda2 0.1 \
--logging_steps 200 \
--training_phase dynabertw \
--graft_during_training \
--data_aug"""

DEPTH = r"""--model_type bert \
--task_name $TASK \
--do_train \
--data_dir $DATA_DIR \
--model_dir $W_BERT \
--output_dir $WD_BERT \
--max_seq_length 128 \
--learning_rate 2e-5 \
--per_gpu_train_batch_size 32 \
--per_gpu_eval_batch_size 32 \
--num_train_epochs 3 \
--width_mult_list 0.25,0.5,0.75,1.0 \
--depth_mult_list 0.5,0.75,1.0 \
--depth_lambda1 1.0 \
--depth_lambda2 1.0 \
--logging_steps 200 \
--training_phase dynabert \
--data_aug \
"""

FINAL = r"""--model_type bert \
--task_name $TASK \
--do_train \
--data_dir $DATA_DIR \
--model_dir $WD_BERT \
--output_dir $WD_BERT \
--max_seq_length 128 \
--learning_rate 2e-5 \
--per_gpu_train_batch_size 32\
--per_gpu_eval_batch_size 32\
--num_train_epochs 3 \
--width_mult_list 0.25,0.5,0.75,1.0 \
--depth_mult_list 0.5,0.75,1.0 \
--logging_steps 20 \
--training_phase final_finetuning \
"""


def argv(command: str, paths: dict, *extra: str) -> list[str]:
    """The command's arguments as bash would split them, with the variables filled in.

    Two lines of the reference's final command end in ``32\\`` without a space, which bash joins
    with the next flag into ``32--per_gpu_eval_batch_size``; its own argparse fails there too.
    The space is restored (docs/decisions.md); everything else is verbatim.
    """
    text = string.Template(command.replace("32\\\n", "32 \\\n")).substitute(paths)
    return shlex.split(text.replace("\\\n", " ")) + list(extra)


@pytest.fixture(scope="module")
def reference_dirs(tmp_path_factory):
    """$DATA_DIR (toy task with train_aug.tsv, as TinyBERT's augmentation leaves it) and $BERT_DIR (a
    task-fine-tuned tiny BERT that takes the reference's 128 tokens)."""
    from ofa_flexbert.app.demo import write_synthetic_task, write_tiny_bert

    root = tmp_path_factory.mktemp("reference")
    data_dir, pretrained, teacher = root / "SST-2", root / "pretrained", root / "bert"
    write_synthetic_task(str(data_dir), seed=1, num_train=200, num_dev=100)
    shutil.copy(data_dir / "train.tsv", data_dir / "train_aug.tsv")
    write_tiny_bert(str(pretrained), seed=1, max_positions=128)
    assert main(["--task", "sst-2", "--stage", "finetune", "--data_dir", str(data_dir), "--model_dir",
                 str(pretrained), "--output_dir", str(teacher), "--max_steps", "5", "--learning_rate", "1e-3",
                 "--config", os.path.join(ROOT, "configs", "demo.yaml")]) == 0
    return {"TASK": "SST-2", "DATA_DIR": str(data_dir), "BERT_DIR": str(teacher), "W_BERT": str(root / "w_bert"),
            "WD_BERT": str(root / "wd_bert")}


def weights(model_dir):
    return {k: v.numpy() for k, v in paddle.load(os.path.join(model_dir, "model_state.pdparams")).items()}


@pytest.mark.slow
def test_the_reference_width_depth_and_final_command_lines_run(reference_dirs):
    paths = reference_dirs
    assert main(argv(WIDTH, paths, "--max_steps", "3")) == 0
    assert main(argv(DEPTH, paths, "--max_steps", "3")) == 0
    depth_weights = weights(paths["WD_BERT"])
    assert main(argv(FINAL, paths, "--max_steps", "3")) == 0

    info = json.load(open(os.path.join(paths["WD_BERT"], "flexbert.json")))
    assert (info["stage"], info["complete"], info["depth_rule"]) == ("final", True, "prefix")
    results = json.load(open(os.path.join(paths["WD_BERT"], "eval_results.json")))
    assert len(results["subnets"]) == 12
    after = weights(paths["WD_BERT"])
    if info["kept_input_model"]:  # nothing beat the depth-stage model: it is there, bit for bit
        assert all(np.array_equal(after[k], depth_weights[k]) for k in depth_weights)
    else:  # a better one replaced it
        total = sum(s["metrics"][results["metric"]] for s in results["subnets"])
        assert total > info["input_score"]
        assert any(not np.array_equal(after[k], depth_weights[k]) for k in depth_weights)


@pytest.mark.slow
def test_final_in_place_refuses_a_model_whose_run_did_not_finish(reference_dirs, tmp_path, capsys):
    paths = dict(reference_dirs)
    unfinished = tmp_path / "wd_bert"
    shutil.copytree(reference_dirs["BERT_DIR"], unfinished)
    info_path = unfinished / "flexbert.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "stage": "depth", "complete": False}))
    before = weights(unfinished)
    paths["WD_BERT"] = str(unfinished)
    assert main(argv(FINAL, paths, "--max_steps", "3")) == 2
    assert capsys.readouterr().err == (f"error: --output_dir {unfinished}: final fine-tuning in place needs a "
                                       f"finished model, but the depth run in {unfinished} did not finish (finish "
                                       "or --resume it first)\n")
    assert all(np.array_equal(weights(unfinished)[k], v) for k, v in before.items())


@pytest.mark.slow
def test_only_final_fine_tuning_may_write_into_its_input(reference_dirs, capsys):
    paths = reference_dirs
    same = ["--model_dir", paths["BERT_DIR"], "--output_dir", paths["BERT_DIR"]]
    assert main(argv(WIDTH, paths, "--max_steps", "3") + same) == 2
    assert capsys.readouterr().err == (f"error: --output_dir {paths['BERT_DIR']}: is the --model_dir; write the "
                                       "stage's output elsewhere (it would overwrite its own input)\n")
