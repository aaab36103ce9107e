#!/usr/bin/env python
"""Benchmark: the width x depth grid of the depth stage, beside the teacher.

    GLUE_DIR=../shared/data/glue python bench/depth_grid.py --task sst-2 \
        --width_dir bench_out/grafting/sst-2/sst-2-s1-plain \
        --teacher bench_out/teachers/sst-2-lr5e-05-ep3-s42 --out bench_out/depth/sst-2 --epochs 1

Runs ``run_ofa_glue.py --stage depth`` (what a user runs; continued with --resume if a
checkpoint is there), then writes ``<out>/grid.md`` (dev metric and share of the full model's
MACs per subnet, the teacher's metric beside; a subnet that predicts one class for every
example is marked as a failure, not a data point) and ``<out>/grid.png`` (metric vs MACs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from benchlib import atomic_write, axes, run, save

from ofa_flexbert.glue.data import batches_per_epoch  # noqa: E402  -- the stages' own epoch length


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def markdown(stage: dict, teacher: dict, info: dict, seconds: float) -> str:
    metric = stage["metric"]
    subnets = {(s["width_mult"], s["depth_mult"]): s for s in stage["subnets"]}
    widths = sorted({w for w, _ in subnets}, reverse=True)
    depths = sorted({d for _, d in subnets}, reverse=True)
    full = max(s["macs"] for s in subnets.values())
    lines = [f"Dev {metric} (share of the full model's MACs per example) after the depth stage; "
             f"teacher {metric} = {teacher['subnets'][0]['metrics'][metric]:.4f}.", "",
             "| depth \\ width | " + " | ".join(f"{w:g}" for w in widths) + " |",
             "|---|" + "---|" * len(widths)]
    for d in depths:
        cells = []
        for w in widths:
            s = subnets[(w, d)]
            flag = " **one class: failed**" if s.get("single_class") else ""
            cells.append(f"{s['metrics'][metric]:.4f} ({s['macs'] / full:.0%}){flag}")
        lines.append(f"| {d:g} | " + " | ".join(cells) + " |")
    failed = [k for k, s in subnets.items() if s.get("single_class")]
    lines += ["", f"Best step {stage['best_step']} of {info['steps']}; {info['train_examples']} training examples; "
              f"wall time {seconds / 60:.0f} min; full model {full / 1e6:.1f} M MACs per dev example."]
    if info.get("cls_spread_share"):
        lines.append(f"Depth rule {info.get('depth_rule', 'prefix')}; the stage's pre-training check, "
                     "[CLS] spread per depth as a share of full depth's: " +
                     ", ".join(f"d{d} {share:.4f}" for d, share in sorted(info["cls_spread_share"].items())) + ".")
    if failed:
        lines.append("Subnets predicting a single class (failures): " +
                     ", ".join(f"w{w:g}/d{d:g}" for w, d in sorted(failed)))
    return "\n".join(lines) + "\n"


def plot(stage: dict, teacher: dict, path: str, title: str) -> None:
    metric = stage["metric"]
    full = max(s["macs"] for s in stage["subnets"])
    fig, ax = axes("MACs per example (share of the full model)", f"dev {metric}", title)
    for d in sorted({s["depth_mult"] for s in stage["subnets"]}, reverse=True):
        points = sorted((s["macs"] / full, s["metrics"][metric], s.get("single_class"))
                        for s in stage["subnets"] if s["depth_mult"] == d)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"depth {d:g}")
        for x, y, failed in points:
            if failed:
                ax.plot(x, y, "kx", markersize=10)
    ax.axhline(teacher["subnets"][0]["metrics"][metric], color="grey", linestyle="--", label="teacher")
    save(fig, ax, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--width_dir", required=True, help="a width-stage output directory")
    parser.add_argument("--teacher", required=True, help="the finetune-stage output the width stage started from")
    parser.add_argument("--out", required=True, help="the depth stage's --output_dir")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--evals_per_epoch", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the stage")
    args = parser.parse_args()
    # The depth stage trains on the whole training set, as the teacher's run did (the width
    # stage held a slice out for importance, so its count is smaller).
    teacher_info = load(os.path.join(args.teacher, "flexbert.json"))
    per_epoch = batches_per_epoch(teacher_info["train_examples"], args.batch_size)
    cmd = [sys.executable, "run_ofa_glue.py", "--task", args.task, "--stage", "depth", "--model_dir", args.width_dir,
           "--output_dir", args.out, "--num_train_epochs", str(args.epochs),
           "--per_gpu_train_batch_size", str(args.batch_size),
           "--logging_steps", str(max(1, per_epoch // args.evals_per_epoch)), *args.extra]
    if os.path.exists(os.path.join(args.out, "checkpoint")):
        cmd.append("--resume")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    seconds = run(cmd, args.out.rstrip("/") + ".log", append=True)
    stage, teacher = load(os.path.join(args.out, "eval_results.json")), load(os.path.join(args.teacher, "eval_results.json"))
    info = load(os.path.join(args.out, "flexbert.json"))
    text = markdown(stage, teacher, info, seconds)
    atomic_write(os.path.join(args.out, "grid.md"), text)
    plot(stage, teacher, os.path.join(args.out, "grid.png"), f"{args.task}: depth stage, {args.epochs:g} epoch(s)")
    print(text)


if __name__ == "__main__":
    main()
