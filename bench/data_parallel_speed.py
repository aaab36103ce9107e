#!/usr/bin/env python
"""Benchmark: one process with N threads vs N data-parallel processes with one thread each.

    GLUE_DIR=../shared/data/glue python bench/data_parallel_speed.py --task sst-2 \
        --model_dir bench_out/teachers/sst-2-lr5e-05-ep3-s42 --out bench_out/dp_speed --steps 20

Runs the width stage (4 widths, distillation) for ``--steps`` steps at the same global batch
both ways and reports the median training-step time, read from the VisualDL timestamps of
``train/loss`` (so start-up, importance and the final evaluation are not in it), and the
whole run's wall time.  On a CPU machine this answers whether the launcher is worth it there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from benchlib import atomic_write, run


def step_seconds(output_dir: str) -> float:
    """Median time between consecutive logged training steps."""
    from visualdl import LogReader

    vdl = os.path.join(output_dir, "vdl", "width")
    reader = LogReader(file_path=os.path.join(vdl, os.listdir(vdl)[0]))
    stamps = [r.timestamp for r in reader.get_data("scalar", "train/loss")]
    return statistics.median((b - a) / 1000.0 for a, b in zip(stamps, stamps[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True, help="a fine-tuned teacher")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    n = args.processes
    common = ["run_ofa_glue.py", "--task", args.task, "--stage", "width", "--model_dir", args.model_dir, "--distill",
              "--max_steps", str(args.steps), "--logging_steps", str(args.steps)]
    single_dir, dp_dir = os.path.join(args.out, "single"), os.path.join(args.out, "dp")
    single = run([sys.executable, *common, "--output_dir", single_dir, "--num_threads", str(n),
                  "--per_gpu_train_batch_size", str(args.batch_size)], single_dir + ".log")
    parallel = run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(n),
                    "--log_dir", dp_dir + ".launch", *common, "--output_dir", dp_dir, "--num_threads", "1",
                    "--per_gpu_train_batch_size", str(args.batch_size // n)], dp_dir + ".log")
    rows = [("1 process x %d threads, batch %d" % (n, args.batch_size), single, step_seconds(single_dir)),
            ("%d processes x 1 thread, batch %d each" % (n, args.batch_size // n), parallel, step_seconds(dp_dir))]
    lines = [f"Width stage, {args.task}, 4 widths with distillation, global batch {args.batch_size}, "
             f"{args.steps} steps, {os.cpu_count()} cores.", "",
             "| layout | median step (s) | run wall time (s) |", "|---|---|---|"]
    lines += [f"| {name} | {step:.2f} | {wall:.0f} |" for name, wall, step in rows]
    lines += ["", f"Data parallel step time / single-process step time: {rows[1][2] / rows[0][2]:.2f}"]
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(args.out, "results.md"), text)
    atomic_write(os.path.join(args.out, "results.json"),
                 json.dumps([{"layout": r[0], "wall_seconds": r[1], "median_step_seconds": r[2]} for r in rows], indent=2))
    print(text)


if __name__ == "__main__":
    main()
