#!/usr/bin/env python
"""Benchmark: the width stage with and without neural grafting, same seeds, same teacher.

    GLUE_DIR=../shared/data/glue python bench/width_grafting.py --out bench_out/grafting \
        --task sst-2 --teacher bench_out/teachers/sst-2-lr5e-05-ep3-s42 --seeds 1 2 3 \
        --epochs 1 --graft_stop 130

Each run is ``run_ofa_glue.py --stage width`` in its own process (what a user runs), with the
task's configs/<task>.yaml settings; the only difference between a pair is
``--graft_during_training``.  With one epoch the reference schedule grafts nothing (it stops
when the last epoch starts), so ``--graft_stop`` sets the last step that may graft.
Writes ``<out>/results.json`` (resumable: finished runs are skipped), ``<out>/results.md``
(every run, then the per-width mean and the paired difference with its spread over seeds) and
``<out>/grafting.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from benchlib import atomic_write, axes, run, save

from ofa_flexbert.glue.data import batches_per_epoch  # noqa: E402  -- the stages' own epoch length
from ofa_flexbert.app.stages.task_data import split_holdout# noqa: E402  -- the stage's own holdout rule


def summary(results: list[dict], metric: str) -> list[str]:
    """Markdown: every run, then per width the mean without/with grafting and the paired difference."""
    lines = ["| seed | grafting | grafts | " + " | ".join(f"w{w:g}" for w in widths(results)) + " | steps | wall (s) |",
             "|---|---|---|" + "---|" * len(widths(results)) + "---|---|"]
    for r in results:
        cells = " | ".join(f"{r['metrics'][f'{w:g}'][metric]:.4f}" for w in widths(results))
        lines.append(f"| {r['seed']} | {'on' if r['graft'] else 'off'} | {r['grafts']} | {cells} | "
                     f"{r['steps']} | {r['wall_seconds']:.0f} |")
    seeds = sorted({r["seed"] for r in results if r["graft"]} & {r["seed"] for r in results if not r["graft"]})
    if not seeds:
        return lines
    lines += ["", f"Paired over seeds {', '.join(map(str, seeds))} ({metric}, dev, best checkpoint):", "",
              "| width | without grafting (mean) | with grafting (mean) | difference (mean ± sd) |", "|---|---|---|---|"]
    for w in widths(results):
        off = [pick(results, s, False)["metrics"][f"{w:g}"][metric] for s in seeds]
        on = [pick(results, s, True)["metrics"][f"{w:g}"][metric] for s in seeds]
        diff = [b - a for a, b in zip(off, on)]
        spread = f" ± {statistics.stdev(diff):.4f}" if len(diff) > 1 else " (one seed)"
        lines.append(f"| {w:g} | {statistics.mean(off):.4f} | {statistics.mean(on):.4f} | "
                     f"{statistics.mean(diff):+.4f}{spread} |")
    return lines


def widths(results: list[dict]) -> list[float]:
    return sorted({float(w) for r in results for w in r["metrics"]}, reverse=True)


def pick(results: list[dict], seed: int, graft: bool) -> dict:
    return next(r for r in results if r["seed"] == seed and r["graft"] == graft)


def plot(results: list[dict], metric: str, path: str, title: str) -> None:
    fig, ax = axes("width multiplier", f"dev {metric}", title)
    ws = widths(results)
    for graft, colour in ((False, "tab:blue"), (True, "tab:orange")):
        for r in (r for r in results if r["graft"] == graft):
            ax.plot(ws, [r["metrics"][f"{w:g}"][metric] for w in ws], "o-", color=colour, alpha=0.6,
                    label=("with" if graft else "without") + " grafting" if r["seed"] == results[0]["seed"] else None)
    save(fig, ax, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--teacher", required=True, help="a fine-tuned teacher (finetune stage output)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--graft_stop", type=int, default=-1, help="passed to the stage (-1: reference schedule)")
    parser.add_argument("--evals_per_epoch", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--importance_holdout", type=float, default=0.1,
                        help="passed to the stage: the share of train kept out for importance")
    parser.add_argument("--arms", nargs="+", choices=("plain", "graft"), default=["plain", "graft"],
                        help="which arms to run (split a seed's two arms across cores, one --out each)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for every run")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else []
    for seed in args.seeds:
        for graft in (arm == "graft" for arm in args.arms):
            if any(r["seed"] == seed and r["graft"] == graft for r in results):
                continue
            out = os.path.join(args.out, f"{args.task}-s{seed}-{'graft' if graft else 'plain'}")
            cmd = [sys.executable, "run_ofa_glue.py", "--task", args.task, "--stage", "width",
                   "--model_dir", args.teacher, "--output_dir", out, "--seed", str(seed),
                   "--num_train_epochs", str(args.epochs), "--per_gpu_train_batch_size", str(args.batch_size),
                   "--graft_stop", str(args.graft_stop), "--logging_steps", "{logging_steps}",
                   "--importance_holdout", str(args.importance_holdout),
                   "--graft_during_training" if graft else "--no-graft_during_training", *args.extra]
            # The teacher's run recorded the training-set size; the stage holds a slice of it out for
            # importance, sized by the stage's own rule.
            probe = json.load(open(os.path.join(args.teacher, "flexbert.json")))
            train, _ = split_holdout(range(probe["train_examples"]), args.importance_holdout, seed)
            per_epoch = batches_per_epoch(len(train), args.batch_size)
            cmd[cmd.index("{logging_steps}")] = str(max(1, per_epoch // args.evals_per_epoch))
            if os.path.exists(os.path.join(out, "checkpoint")):
                cmd.append("--resume")
            seconds = run(cmd, out + ".log")
            evaluation = json.load(open(os.path.join(out, "eval_results.json")))
            info = json.load(open(os.path.join(out, "flexbert.json")))
            results.append({"task": args.task, "seed": seed, "graft": graft, "epochs": args.epochs,
                            "metrics": {f"{s['width_mult']:g}": s["metrics"] for s in evaluation["subnets"]},
                            "metric": evaluation["metric"], "best_step": evaluation["best_step"],
                            "grafts": info.get("grafts", 0), "steps": info["steps"],
                            "wall_seconds": round(seconds, 1),
                            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "versions": info["versions"]})
            atomic_write(results_path, json.dumps(results, indent=2))
            print(f"seed {seed} graft={graft}: {results[-1]['metrics']} in {seconds:.0f}s", flush=True)
    metric = results[0]["metric"]
    lines = summary(results, metric)
    atomic_write(os.path.join(args.out, "results.md"), "\n".join(lines) + "\n")
    plot(results, metric, os.path.join(args.out, "grafting.png"),
         f"{args.task}: width stage, {args.epochs:g} epoch(s), {len({r['seed'] for r in results})} seeds")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
