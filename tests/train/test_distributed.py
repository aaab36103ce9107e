"""Data parallel training: two CPU processes with gloo, through paddle.distributed.launch.

Each launched run goes through tests/dp_worker.py, which runs the CLI and dumps every rank's
trained weights.  The single-process references run the same CLI in this process.
"""
import json
import os

import numpy as np
import paddle
import pytest

from conftest import stage_argv, vdl_scalars, without_dropout
from launcher import launch
from ofa_flexbert.app.cli import main

# Adam's first step moves a weight by lr * g / (|g| + eps): with the default eps (1e-8) a gradient
# that is float noise (~1e-9) could still move its weight by a tenth of lr, in either direction.
# A larger eps damps such weights, so two computations of one step agree to float precision.
EXACT = ("--adam_epsilon", "1e-6", "--learning_rate", "1e-3")


def equal_length_task(data_dir, out):
    """The toy task's training examples of its commonest length only (dev unchanged).

    The hidden-state MSE averages over padded positions too (as DistillConfig's does, and the
    reference's, which always pads to 128), so its value depends on how far a batch is padded:
    two batches of 16 pad less than one of 32.  With equal lengths they pad alike, and a
    2 x 16 step must then equal a 32 step to float precision.
    """
    import shutil
    from collections import Counter

    rows = open(os.path.join(data_dir, "train.tsv"), encoding="utf-8").read().splitlines()
    lengths = Counter(len(r.split("\t")[0].split()) for r in rows[1:])
    common = lengths.most_common(1)[0][0]
    os.makedirs(out)
    kept = [rows[0]] + [r for r in rows[1:] if len(r.split("\t")[0].split()) == common]
    with open(os.path.join(out, "train.tsv"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(kept) + "\n")
    shutil.copy(os.path.join(data_dir, "dev.tsv"), os.path.join(out, "dev.tsv"))
    assert len(kept) > 64
    return str(out)


def eval_rows(dump, kind="eval_rows"):
    """How many dev rows each rank ran through the model (tests/dp_worker.py counts them).

    ``kind="importance_rows"``: the rows each rank ran through importance computations.
    """
    return [json.loads((dump / f"rank{r}.json").read_text())[kind] for r in (0, 1)]


def dev_size(data_dir):
    with open(os.path.join(str(data_dir), "dev.tsv"), encoding="utf-8") as fh:
        return len(fh.read().splitlines()) - 1


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype("float64") - b[k]).max()) for k in a)


def saved(out):
    return {k: v.numpy() for k, v in paddle.load(str(out / "model_state.pdparams")).items()}


def last_losses(out, stage):
    """The logged training losses of the last step: ``{tag: value}``."""
    return {tag: values[-1][1] for tag, values in vdl_scalars(out, stage).items()
            if tag.startswith("train/") and tag.endswith("loss")}


# --- the sampler: global batches, sharded ------------------------------------------------------

def test_ranks_split_each_global_batch_of_the_single_process_order():
    from ofa_flexbert.glue.data import EpochBatchSampler

    single = EpochBatchSampler(103, 20, shuffle=True, seed=5)
    ranks = [EpochBatchSampler(103, 10, shuffle=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        whole, parts = list(single), [list(s) for s in ranks]
        assert len(whole) == len(parts[0]) == len(parts[1]) == len(single) == len(ranks[1]) == 6
        for batch, first, second in zip(whole, *parts):
            assert first + second == batch  # rank 0 the first slice, rank 1 the second
        assert [len(b) for b in parts[0]] == [10] * 5 + [2] and [len(b) for b in parts[1]] == [10] * 5 + [1]


def test_a_last_global_batch_smaller_than_the_world_still_feeds_every_rank():
    from ofa_flexbert.glue.data import EpochBatchSampler

    ranks = [list(EpochBatchSampler(11, 2, shuffle=False, seed=0, rank=r, world_size=4)) for r in range(4)]
    assert [r[0] for r in ranks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [r[1] for r in ranks] == [[8], [9], [10], [0]]  # 3 examples for 4 ranks: topped up from the start
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        EpochBatchSampler(5, 2, shuffle=False, seed=0, rank=2, world_size=2)


# --- two gloo ranks --------------------------------------------------------------------------

@pytest.mark.slow
def test_ranks_stay_identical_under_data_parallel_and_drift_apart_without_it(toy_teacher, tmp_path):
    """6 width steps with dropout, distillation and 2 grafts: every rank ends with the same weights."""
    data_dir, teacher = toy_teacher
    argv = stage_argv("width", data_dir, teacher, tmp_path / "out", "--distill", "--per_gpu_train_batch_size", "16",
                      "--max_steps", "6", "--logging_steps", "3", "--graft_during_training", "--graft_period", "2",
                      "--graft_stop", "4", "--learning_rate", "1e-3")
    rank0, rank1 = launch(tmp_path, "sync", "sync", argv)
    assert max_diff(rank0, rank1) == 0.0
    assert max_diff(rank0, saved(tmp_path / "out")) == 0.0  # rank 0 wrote what it trained
    info = json.loads((tmp_path / "out" / "flexbert.json").read_text())
    assert (info["world_size"], info["global_train_batch_size"], info["grafts"]) == (2, 32, 2)

    argv[argv.index("--output_dir") + 1] = str(tmp_path / "control")
    control0, control1 = launch(tmp_path, "nosync", "nosync", argv)
    assert max_diff(control0, control1) > 1e-3


@pytest.mark.slow
def test_a_width_step_on_two_ranks_equals_one_single_process_step_with_twice_the_batch(toy_teacher, tmp_path):
    """Same loss (also the distillation terms, non-zero) and the same updated weights, within 1e-5;
    the ranks share the evaluation and the importance for rewiring: each dev example is run once
    by one rank, and the summed importance still gives the single process's permutation (any
    other permutation would move the weights far more than 1e-5)."""
    data_dir, teacher = toy_teacher
    data_dir, teacher = equal_length_task(data_dir, tmp_path / "data"), without_dropout(teacher, tmp_path / "teacher")

    def argv(out, batch):
        return stage_argv("width", data_dir, teacher, tmp_path / out, "--distill", "--max_steps", "1",
                          "--per_gpu_train_batch_size", str(batch), "--per_gpu_eval_batch_size", "16",
                          "--importance_data", "dev", *EXACT)

    launch(tmp_path, "dp", "sync", argv("dp", 16))
    assert main(argv("single", 32)) == 0
    assert main(argv("half", 16)) == 0  # control: what rank 0 alone would do

    dp, single = last_losses(tmp_path / "dp", "width"), last_losses(tmp_path / "single", "width")
    assert dp.keys() == single.keys() and "train/w0.25/hidden_loss" in dp
    for tag in dp:
        assert abs(dp[tag] - single[tag]) < 1e-5, (tag, dp[tag], single[tag])
    assert min(v for t, v in dp.items() if t.endswith("hidden_loss") and "/w1/" not in t) > 1e-3
    assert max_diff(saved(tmp_path / "dp"), saved(tmp_path / "single")) < 1e-5
    assert max_diff(saved(tmp_path / "half"), saved(tmp_path / "single")) > 1e-4
    rows = eval_rows(tmp_path / "dp.dump")
    assert sum(rows) == 4 * dev_size(data_dir) and abs(rows[0] - rows[1]) <= 4 * 16, rows  # 4 widths, 1 evaluation
    rows = eval_rows(tmp_path / "dp.dump", "importance_rows")
    assert sum(rows) == dev_size(data_dir) and abs(rows[0] - rows[1]) <= 16, rows  # rewiring, no graft


@pytest.mark.slow
def test_sharded_evaluation_gives_the_single_process_metrics_also_when_a_rank_has_no_batch(toy_width_model, tmp_path):
    """final evaluates its input before training: the same weights on 2 ranks and on 1, so the scores
    must be equal exactly.  One dev batch (eval batch 1000): rank 1 has nothing to evaluate."""
    data_dir, width_dir = toy_width_model

    def argv(out):
        return stage_argv("final", data_dir, width_dir, tmp_path / out, "--max_steps", "1",
                          "--per_gpu_eval_batch_size", "1000")

    launch(tmp_path, "dp", "sync", argv("dp"))
    assert main(argv("single")) == 0
    scores = [json.loads((tmp_path / out / "flexbert.json").read_text())["input_score"] for out in ("dp", "single")]
    assert scores[0] == scores[1] and scores[0] > 12 * 0.3, scores  # the sum over 12 subnets
    assert eval_rows(tmp_path / "dp.dump") == [12 * dev_size(data_dir), 0]


def test_shard_deals_batches_round_robin_and_gather_restores_their_order(monkeypatch):
    from ofa_flexbert.train import distributed

    def shares(items, world):
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        out = []
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            out.append(list(distributed.shard(items)))
        return out

    assert shares("abcdefg", 3) == [[(0, "a"), (3, "d"), (6, "g")], [(1, "b"), (4, "e")], [(2, "c"), (5, "f")]]
    parts = shares("abc", 4)
    assert parts[3] == []
    # all_gather_object lists the ranks in rank order; gather must not depend on it
    monkeypatch.setattr(distributed, "init", lambda: None)
    monkeypatch.setattr(paddle.distributed, "all_gather_object",
                        lambda out, obj: out.extend([parts[2], parts[3], parts[1], parts[0]]))
    assert distributed.gather(parts[1]) == ["a", "b", "c"]


def test_sum_over_ranks_adds_in_rank_order_whatever_order_the_ranks_arrive_in(monkeypatch):
    from ofa_flexbert.train import distributed

    values = [1.0, 1.0, 1e16]
    parts = [(r, (np.full([2], values[r]), np.array([r]))) for r in range(3)]
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "init", lambda: None)
    monkeypatch.setattr(paddle.distributed, "all_gather_object",
                        lambda out, obj: out.extend([parts[2], parts[0], parts[1]]))
    first, second = distributed.sum_over_ranks(np.zeros([2]), np.zeros([1]))
    # float64 addition is not associative: (1 + 1) + 1e16 = 1e16 + 2, but (1e16 + 1) + 1 = 1e16.
    # Every rank must get the rank-order sum, whatever order the gathered parts come in.
    assert first.tolist() == [1e16 + 2] * 2 and second.tolist() == [3]
    assert parts[0][1][0].tolist() == [1.0, 1.0]  # the inputs are not modified


@pytest.mark.slow
def test_a_depth_step_on_two_ranks_equals_one_single_process_step_with_twice_the_batch(toy_width_model, tmp_path):
    """Shallow subnets leave layers unused in their backward: the 12-subnet step still matches."""
    data_dir, width_dir = toy_width_model
    data_dir, model = equal_length_task(data_dir, tmp_path / "data"), without_dropout(width_dir, tmp_path / "model")

    def argv(out, batch):
        return stage_argv("depth", data_dir, model, tmp_path / out, "--max_steps", "1",
                          "--per_gpu_train_batch_size", str(batch), *EXACT)

    launch(tmp_path, "dp", "sync", argv("dp", 16))
    assert main(argv("single", 32)) == 0
    dp, single = last_losses(tmp_path / "dp", "depth"), last_losses(tmp_path / "single", "depth")
    assert len(dp) == 1 + 12 * 3 and dp.keys() == single.keys()
    for tag in dp:
        assert abs(dp[tag] - single[tag]) < 1e-5, (tag, dp[tag], single[tag])
    assert max_diff(saved(tmp_path / "dp"), saved(tmp_path / "single")) < 1e-5


@pytest.mark.slow
def test_a_data_parallel_run_resumes_after_a_crash_and_ends_where_an_uninterrupted_one_ends(toy_teacher, tmp_path,
                                                                                               capsys):
    data_dir, teacher = toy_teacher

    def argv(out, *extra):
        return stage_argv("width", data_dir, teacher, tmp_path / out, "--distill", "--per_gpu_train_batch_size", "16",
                          "--max_steps", "6", "--logging_steps", "3", "--learning_rate", "1e-3", *extra)

    whole = launch(tmp_path, "whole", "sync", argv("whole"))
    launch(tmp_path, "crash", "crash@5", argv("broken"), expect_rc=3)  # rank 0 died; launch stopped rank 1
    assert json.loads((tmp_path / "broken" / "checkpoint" / "state.json").read_text())["step"] == 3
    assert main(argv("broken", "--resume")) == 2  # one process cannot continue a 2-process run
    assert "world_size: 2 -> 1" in capsys.readouterr().err
    resumed = launch(tmp_path, "resumed", "sync", argv("broken", "--resume"))
    assert max_diff(resumed[0], whole[0]) < 1e-6 and max_diff(resumed[0], resumed[1]) == 0.0
