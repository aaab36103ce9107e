#!/usr/bin/env python
"""Benchmark: tokens a training epoch processes with and without --group_by_length, and (``--train``)
the wall time per epoch and dev metric of a fine-tuning run each way.

    GLUE_DIR=../shared/data/glue python bench/group_by_length.py --model_dir bench_out/cpu_speed/minilm-paddle \\
        --tasks rte mrpc sst-2 --out bench_out/group_by_length
    GLUE_DIR=../shared/data/glue python bench/group_by_length.py --model_dir bench_out/cpu_speed/minilm-paddle \\
        --tasks rte mrpc --out bench_out/group_by_length --train --pooling mean

Each task's training split is tokenised as the stages tokenise it (``--max_seq_length`` 128) and
batched by the stages' own sampler (batch 32, seed 42, epoch 0), once with the default shuffled
batches and once grouped by length.  Every batch is padded to its longest example (dynamic
padding), so the tokens processed are the sum over batches of batch size x longest length.
Printed as a table and written to ``<out>/results.json``.

``--train`` then fine-tunes each task twice from ``--model_dir`` (``run_ofa_glue.py --stage finetune``
at the task's configured learning rate and epochs), default batches and ``--group_by_length``, the
two runs side by side on one thread each so that whatever else the machine does slows both alike.
Each run's training seconds per epoch (evaluation excluded), its dev metric (best of two
evaluations per epoch) and the ratio are written to ``<out>/train_results.json``.  Finished pairs
are skipped; an interrupted run continues from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from benchlib import atomic_write, run_side_by_side

from ofa_flexbert.config import task_data_dir  # noqa: E402  -- after benchlib, which puts the project on the path
from ofa_flexbert.glue.data import EpochBatchSampler, batches_per_epoch, encode, get_task, read_split
from ofa_flexbert.store.models import load_tokenizer


def tokens_per_epoch(lengths: list[int], batch_size: int, seed: int, grouped: bool) -> int:
    """Tokens the padded batches of epoch 0 hold."""
    sampler = EpochBatchSampler(len(lengths), batch_size, shuffle=True, seed=seed,
                                lengths=lengths if grouped else None)
    sampler.set_epoch(0)
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="a model directory (its tokenizer is used)")
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="bench_out/group_by_length")
    parser.add_argument("--train", action="store_true", help="also fine-tune each task both ways (slow)")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="mean", help="the fine-tuned models' --pooling")
    parser.add_argument("--evals_per_epoch", type=int, default=2)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model_dir)
    rows = []
    for name in args.tasks:
        task = get_task(name)
        examples = read_split(task, task_data_dir(None, task.dir_name), "train")
        lengths = [len(row["input_ids"]) for row in encode(examples, task, tokenizer, args.max_seq_length)]
        plain = tokens_per_epoch(lengths, args.batch_size, args.seed, grouped=False)
        grouped = tokens_per_epoch(lengths, args.batch_size, args.seed, grouped=True)
        rows.append({"task": task.name, "examples": len(lengths), "real_tokens": sum(lengths),
                     "default_tokens": plain, "grouped_tokens": grouped})
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "results.json"), json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"tokens per training epoch, batch {args.batch_size}, max length {args.max_seq_length}, seed {args.seed}:")
    print("| task | examples | real tokens | default batches (padding share) | --group_by_length (padding share) "
          "| default / grouped |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        share = (lambda t: f"{t:,} ({1 - r['real_tokens'] / t:.1%})")
        print(f"| {r['task']} | {r['examples']:,} | {r['real_tokens']:,} | {share(r['default_tokens'])} | "
              f"{share(r['grouped_tokens'])} | {r['default_tokens'] / r['grouped_tokens']:.2f} |")
    if args.train:
        train_both_ways(args)


def steps_per_epoch(task: str, batch_size: int) -> int:
    """Optimizer steps in one epoch of the task's training split."""
    spec = get_task(task)
    return batches_per_epoch(len(read_split(spec, task_data_dir(None, spec.dir_name), "train")), batch_size)


def finetune_command(args: argparse.Namespace, task: str, out: str, grouped: bool) -> list[str]:
    """The finetune stage as a user runs it, at the task's configured rate and epochs."""
    logging_steps = max(1, steps_per_epoch(task, args.batch_size) // args.evals_per_epoch)
    cmd = [sys.executable, "run_ofa_glue.py", "--task", task, "--stage", "finetune", "--model_dir", args.model_dir,
           "--output_dir", out, "--seed", str(args.seed), "--per_gpu_train_batch_size", str(args.batch_size),
           "--max_seq_length", str(args.max_seq_length), "--logging_steps", str(logging_steps),
           "--num_threads", "1", "--pooling", args.pooling]
    if grouped:
        cmd.append("--group_by_length")
    if os.path.exists(os.path.join(out, "checkpoint")):  # an interrupted run continues
        cmd.append("--resume")
    return cmd


def run_summary(out: str, epoch_steps: int, resumed: bool) -> dict:
    """Seconds per epoch (training and its dev evaluations) and the best dev metrics of one finished run.

    A resumed run's seconds cover only its last part, so it is marked and its time not compared.
    """
    info = json.load(open(os.path.join(out, "flexbert.json")))
    evaluation = json.load(open(os.path.join(out, "eval_results.json")))
    epochs = info["steps"] / epoch_steps
    return {"seconds": info["seconds"], "steps": info["steps"], "epochs": epochs, "resumed": resumed,
            "seconds_per_epoch": None if resumed else info["seconds"] / epochs,
            "metrics": evaluation["subnets"][0]["metrics"], "best_step": evaluation["best_step"]}


def train_both_ways(args: argparse.Namespace) -> None:
    """Fine-tune each task with default and grouped batches side by side; write train_results.json."""
    path = os.path.join(args.out, "train_results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for task in args.tasks:
        if task in results:
            continue
        outs = {way: os.path.join(args.out, f"{task}-{way}") for way in ("default", "grouped")}
        resumed = {way: os.path.exists(os.path.join(out, "checkpoint")) for way, out in outs.items()}
        run_side_by_side([(finetune_command(args, task, outs[way], way == "grouped"), outs[way] + ".log")
                          for way in outs])
        epoch_steps = steps_per_epoch(task, args.batch_size)
        results[task] = {way: run_summary(out, epoch_steps, resumed[way]) for way, out in outs.items()}
        atomic_write(path, json.dumps(results, indent=1))
    print("| task | default: s / epoch | grouped: s / epoch | default / grouped | default dev | grouped dev |")
    print("|---|---|---|---|---|---|")
    for task, r in results.items():
        d, g = r["default"], r["grouped"]
        metrics = (lambda m: ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
        timed = d["seconds_per_epoch"] and g["seconds_per_epoch"]
        times = (f"{d['seconds_per_epoch']:.0f} | {g['seconds_per_epoch']:.0f} | "
                 f"{d['seconds_per_epoch'] / g['seconds_per_epoch']:.2f}") if timed else "resumed | resumed | -"
        print(f"| {task} | {times} | {metrics(d['metrics'])} | {metrics(g['metrics'])} |")


if __name__ == "__main__":
    main()
