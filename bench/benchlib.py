"""What the benchmark scripts share: running the CLI as a user would, atomic result files, plots."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ofa_flexbert.store.atomic import write_text as atomic_write  # noqa: E402,F401  -- re-exported
from ofa_flexbert.app.plots import axes, save  # noqa: E402,F401  -- re-exported
from ofa_flexbert.store.outputs import RUN_INFO  # noqa: E402


def subnet_bench_parser(doc: str, subnets: str, rounds: int, replot_help: str) -> argparse.ArgumentParser:
    """The flags every benchmark of exported subnets takes (task, model, data, output folder, the subnets,
    rounds at batch 1, thread counts, --replot); each script adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--subnets", default=subnets)
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds at batch 1 (batch 32: a fifth, at least 5)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--replot", action="store_true", help=replot_help)
    return parser


def run_side_by_side(jobs: list[tuple[list[str], str]]) -> None:
    """Run every (command, log path) at once from the project root, appending to the logs; exit if one fails.

    Runs compared by their wall time go side by side so that the rest of the machine's load falls on
    them alike.
    """
    logs = [open(log_path, "a") for _, log_path in jobs]
    procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT) for (cmd, _), log in zip(jobs, logs)]
    codes = [proc.wait() for proc in procs]
    for log in logs:
        log.close()
    for (cmd, log_path), code in zip(jobs, codes):
        if code != 0:
            sys.exit(f"failed ({code}): {' '.join(cmd)}; see {log_path}")


def run(cmd: list[str], log_path: str, append: bool = False) -> float:
    """Run ``cmd`` from the project root with its output in ``log_path``; exit on failure. Returns seconds."""
    start = time.time()
    with open(log_path, "a" if append else "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd)}; see {log_path}")
    return time.time() - start


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def complete(output_dir: str) -> bool:
    path = os.path.join(output_dir, RUN_INFO)
    return os.path.exists(path) and bool(load(path).get("complete"))


def stage(task: str, name: str, model_dir: str, out: str, extra: list[str]) -> None:
    """Run one stage unless its output is complete (resumed if it left a checkpoint)."""
    if complete(out):
        return
    cmd = [sys.executable, "run_ofa_glue.py", "--task", task, "--stage", name, "--model_dir", model_dir,
           "--output_dir", out, *extra]
    if os.path.exists(os.path.join(out, "checkpoint")):
        cmd.append("--resume")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    run(cmd, out.rstrip("/") + ".log", append=True)
