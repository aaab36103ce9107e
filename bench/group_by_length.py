#!/usr/bin/env python
"""Benchmark: tokens a training epoch processes with and without --group_by_length (no training).

    GLUE_DIR=../shared/data/glue python bench/group_by_length.py --model_dir bench_out/cpu_speed/minilm-paddle \\
        --tasks rte mrpc sst-2 --out bench_out/group_by_length

Each task's training split is tokenised as the stages tokenise it (``--max_seq_length`` 128) and
batched by the stages' own sampler (batch 32, seed 42, epoch 0), once with the default shuffled
batches and once grouped by length.  Every batch is padded to its longest example (dynamic
padding), so the tokens processed are the sum over batches of batch size x longest length.
Printed as a table and written to ``<out>/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os

from benchlib import atomic_write

from ofa_flexbert.config import task_data_dir  # noqa: E402  -- after benchlib, which puts the project on the path
from ofa_flexbert.data import EpochBatchSampler, encode, get_task, read_split
from ofa_flexbert.models import load_tokenizer


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


if __name__ == "__main__":
    main()
