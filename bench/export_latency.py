#!/usr/bin/env python
"""Latency of exported subnets against the full model, beside their MACs ratios, in one run.

    python bench/export_latency.py --task sst-2 --model_dir MODEL --out OUT [--subnets w1_d1,w0.5_d1,...]

1. Exports every subnet in ``--subnets`` that ``OUT/export`` lacks (``--stage export --format onnx``, as a
   user would; resumable).
2. Times each subnet on Paddle Inference (oneDNN on and off) and onnxruntime, at 1 and 2 threads, at
   batch 1 and 32, on inputs of length 128 (random word pieces) and on the task's real dev inputs.
   Within one setting the models take turns (round-robin, the order rotating each round), so drift on
   the machine hits all of them alike; each figure is a median over rounds, and a subnet's latency is
   reported as a ratio to the full model's measured in the same rounds.
3. Writes ``OUT/latency.json`` and ``OUT/latency.md``: per setting the full model's median in ms and
   each subnet's latency ratio beside its MACs ratio; the goal is latency ratio <= 1.1 x MACs ratio;
   and ``OUT/latency.png``: latency ratio against MACs ratio (1 thread, Paddle Inference with oneDNN
   and onnxruntime).  ``--replot`` redraws the table and figure from ``latency.json`` alone.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchlib import ROOT, atomic_write, axes, run, save, subnet_bench_parser

import patches  # noqa: F401,E402  -- zlib before paddle

from ofa_flexbert.glue.data import get_task, read_split  # noqa: E402
from ofa_flexbert.deploy.predictor import Predictor  # noqa: E402

RUNTIMES = (("paddle", True), ("paddle", False), ("onnx", None))  # (runtime, oneDNN)
GOAL = 1.1  # latency ratio <= GOAL x MACs ratio


def parse_tag(tag: str) -> tuple[float, float]:
    width, depth = tag.split("_")
    return float(width[1:]), float(depth[1:])


def export_missing(args, export_dir: str) -> None:
    missing = [t for t in args.subnets if not os.path.isfile(os.path.join(export_dir, t, "manifest.json"))]
    if not missing:
        return
    pairs = [parse_tag(t) for t in missing]
    cmd = [sys.executable, "run_ofa_glue.py", "--task", args.task, "--stage", "export", "--model_dir", args.model_dir,
           "--output_dir", export_dir, "--format", "onnx", "--overwrite_output_dir",
           "--width_mult", ",".join(f"{w:g}" for w, _ in pairs), "--depth_mult", ",".join(f"{d:g}" for _, d in pairs)]
    if args.data_dir:
        cmd += ["--data_dir", args.data_dir]
    seconds = run(cmd, os.path.join(args.out, "export.log"))
    print(f"exported {', '.join(missing)} in {seconds:.0f} s")


def inputs(predictor: Predictor, args) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The batches each setting runs: per (batch, length) a list of (ids, token types) every model gets."""
    rng = np.random.RandomState(0)
    vocab = len(predictor.tokenizer.vocab)
    cls, sep = predictor.tokenizer.cls_token_id, predictor.tokenizer.sep_token_id

    def synthetic(batch: int) -> tuple[np.ndarray, np.ndarray]:
        ids = rng.randint(1000, vocab, size=(batch, 128)).astype("int64")
        ids[:, 0], ids[:, -1] = cls, sep
        return ids, np.zeros_like(ids)

    task = get_task(args.task)
    data_dir = args.data_dir or os.path.join(os.environ["GLUE_DIR"], task.dir_name)
    examples = read_split(task, data_dir, task.dev_splits[0])[:32 * 8]
    rows = predictor.encode([e.text_a for e in examples], [e.text_b for e in examples] if examples[0].text_b else None)
    singles = [predictor.pad(rows[i:i + 1]) for i in range(len(rows))]
    batched = [predictor.pad(rows[i:i + 32]) for i in range(0, len(rows), 32)]  # arrival order, as documented
    return {"b1_len128": [synthetic(1) for _ in range(8)], "b32_len128": [synthetic(32) for _ in range(2)],
            "b1_dev": singles, "b32_dev": batched}


def time_setting(predictors: dict[str, Predictor], batches: list, rounds: int) -> dict[str, float]:
    """Median seconds per batch of each model; models take turns within each round."""
    names = list(predictors)
    for name in names:  # warm-up: first runs allocate and (oneDNN) pick kernels
        for ids, types in batches[:2]:
            predictors[name].logits(ids, types)
    times = {name: [] for name in names}
    for r in range(rounds):
        ids, types = batches[r % len(batches)]
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            predictors[name].logits(ids, types)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = subnet_bench_parser(__doc__, "w1_d1,w0.75_d1,w0.5_d1,w0.25_d1,w0.5_d0.67,w0.25_d0.5", 60,
                                 "only redraw latency.md and latency.png")
    parser.add_argument("--dynamic_config", help="an --inference_config of a gated/early-exit setting: also export "
                        "it from --gated_model and time it on dev inputs against the static subnets")
    parser.add_argument("--gated_model", help="the gate stage's model directory (with --dynamic_config)")
    parser.add_argument("--dynamic_only", action="store_true", help="with --dynamic_config: skip the static table")
    parser.add_argument("--dynamic_graphs", default="segments,layers",
                        help="with --dynamic_config: the export forms to time side by side")
    parser.add_argument("--int8", action="store_true",
                        help="with --dynamic_config: also the segment export's INT8 form (onnxruntime)")
    args = parser.parse_args()
    if args.replot:
        saved = json.load(open(os.path.join(args.out, "latency.json")))
        write_reports(args.out, saved["results"], saved["subnets"], args.task)
        return
    args.subnets = args.subnets.split(",")
    if args.subnets[0] != "w1_d1":
        sys.exit("--subnets must start with w1_d1 (the full model every ratio is taken against)")
    os.makedirs(args.out, exist_ok=True)
    export_dir = os.path.join(args.out, "export")
    export_missing(args, export_dir)
    manifests = {t: json.load(open(os.path.join(export_dir, t, "manifest.json"))) for t in args.subnets}
    macs = {t: {"len128": m["macs_at_max_seq_length"] / m["full_macs_at_max_seq_length"],
                "dev": m["dev_mean_macs"] / m["dev_full_mean_macs"]} for t, m in manifests.items()}
    if any(m["max_seq_length"] != 128 for m in manifests.values()):
        print("note: exported with max_seq_length != 128; the len128 MACs ratio is at that length")
    batches = inputs(Predictor(os.path.join(export_dir, args.subnets[0])), args)
    if args.dynamic_config:
        dynamic_latency(args, export_dir, batches, macs)
        if args.dynamic_only:
            return
    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        for runtime, onednn in RUNTIMES:
            predictors = {t: Predictor(os.path.join(export_dir, t), num_threads=threads, runtime=runtime,
                                       onednn=bool(onednn)) for t in args.subnets}
            for setting, setting_batches in batches.items():
                rounds = args.rounds if setting.startswith("b1_") else max(5, args.rounds // 5)
                medians = time_setting(predictors, setting_batches, rounds)
                full = medians["w1_d1"]
                row = {"runtime": runtime, "onednn": onednn, "threads": threads, "setting": setting,
                       "rounds": rounds, "full_ms": full * 1e3,
                       "ratios": {t: medians[t] / full for t in args.subnets},
                       "macs_ratios": {t: macs[t]["len128" if setting.endswith("len128") else "dev"]
                                       for t in args.subnets}}
                results.append(row)
                print(f"{runtime:6} oneDNN={str(onednn):5} threads={threads} {setting:10} full {full * 1e3:8.2f} ms  "
                      + "  ".join(f"{t} {row['ratios'][t]:.2f}/{row['macs_ratios'][t]:.2f}" for t in args.subnets[1:]),
                      flush=True)
    atomic_write(os.path.join(args.out, "latency.json"), json.dumps(
        {"task": args.task, "model_dir": os.path.abspath(args.model_dir), "subnets": args.subnets,
         "parameters": {t: m["parameters"] for t, m in manifests.items()}, "results": results,
         "machine": os.uname().nodename, "cpus": os.cpu_count()}, indent=2) + "\n")
    write_reports(args.out, results, args.subnets, args.task)


def dynamic_latency(args, export_dir: str, batches: dict, macs: dict) -> None:
    """The dynamic setting, exported in each ``--dynamic_graphs`` form, against the full model and the static
    subnets, on dev inputs, 1 thread, on each runtime a form runs on (segments with their ONNX form and, with
    ``--int8``, their INT8 form on onnxruntime; per-layer graphs on Paddle Inference only); writes
    ``OUT/latency-dynamic.md``.  Its MACs ratio is its dev mean (manifest), like the static ones'."""
    setting = json.load(open(args.dynamic_config))[args.task]
    mode = setting["mode"]
    shares = {t: macs[t]["dev"] for t in args.subnets}
    folders, runs_on = {}, {t: ("paddle", "onnx") for t in args.subnets}
    for form in args.dynamic_graphs.split(","):
        onnx = form == "segments"  # segment graphs have an ONNX form (and an INT8 one)
        out = os.path.join(args.out, f"export-{form}" + ("-onnx" if onnx else "") + ("-int8" if onnx and args.int8 else ""))
        if not os.path.isfile(os.path.join(out, mode, "manifest.json")):
            cmd = [sys.executable, "run_ofa_glue.py", "--task", args.task, "--stage", "export", "--model_dir",
                   args.gated_model, "--output_dir", out, "--inference_config", args.dynamic_config,
                   "--dynamic_graphs", form, "--overwrite_output_dir"] + (["--data_dir", args.data_dir] if args.data_dir else [])
            cmd += (["--format", "onnx"] if onnx else []) + (["--quantize", "int8"] if onnx and args.int8 else [])
            print(f"exported {mode} ({form}) in {run(cmd, os.path.join(args.out, f'export-{form}.log')):.0f} s", flush=True)
        kinds = [(f"{mode} ({form})", mode, ("paddle", "onnx") if onnx else ("paddle",))]
        kinds += [(f"{mode} ({form}, INT8)", mode + "_int8", ("onnx",))] if onnx and args.int8 else []
        for name, folder, runtimes in kinds:
            manifest = json.load(open(os.path.join(out, folder, "manifest.json")))
            folders[name], runs_on[name] = os.path.join(out, folder), runtimes
            shares[name] = manifest["dev_mean_macs"] / manifest["dev_full_mean_macs"]
    names = args.subnets + list(folders)
    lines = ["| runtime | setting | full (ms) | " + " | ".join(names[1:]) + " |", "|" + "---|" * (3 + len(names) - 1)]
    for runtime, onednn in RUNTIMES:
        here = [t for t in names if runtime in runs_on[t]]
        predictors = {t: Predictor(folders.get(t) or os.path.join(export_dir, t), num_threads=1, onednn=bool(onednn),
                                   runtime=runtime) for t in here}
        label = "onnxruntime" if runtime == "onnx" else f"paddle {'oneDNN' if onednn else 'plain'}"
        for setting_name in ("b1_dev", "b32_dev"):
            rounds = args.rounds if setting_name.startswith("b1_") else max(5, args.rounds // 5)
            medians = time_setting(predictors, batches[setting_name], rounds)
            full = medians["w1_d1"]
            cells = [f"{medians[t] / full:.2f} / {shares[t]:.2f}" if t in medians else "-" for t in names[1:]]
            lines.append(f"| {label} | {setting_name} | {full * 1e3:.2f} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    text = (f"Dynamic predictor ({mode}: {setting}) against the static subnets, 1 thread: latency ratio to the full "
            "model / mean dev MACs ratio, medians over rounds in which the models took turns.\n\n")
    atomic_write(os.path.join(args.out, "latency-dynamic.md"), text + "\n".join(lines) + "\n")


def write_reports(out: str, results: list[dict], subnets: list[str], task: str) -> None:
    atomic_write(os.path.join(out, "latency.md"), table(results, subnets))
    figure(results, subnets, os.path.join(out, "latency.png"), task)
    print(f"wrote {os.path.join(out, 'latency.md')} and latency.png")


def figure(results: list[dict], subnets: list[str], path: str, task: str) -> None:
    """Latency ratio against MACs ratio per subnet, one series per (runtime, setting) at 1 thread."""
    fig, ax = axes("MACs, share of the full model", "latency, share of the full model",
                   f"{task}: exported subnets, 1 thread (medians)")
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, label="latency = MACs")
    ax.plot([0, 1 / GOAL], [0, 1], color="0.6", linewidth=0.8, linestyle="--", label=f"latency = {GOAL} x MACs")
    styles = {"b32_len128": "o", "b1_len128": "s", "b32_dev": "^", "b1_dev": "D"}
    colours = {("paddle", True): "tab:blue", ("paddle", False): "tab:cyan", ("onnx", None): "tab:orange"}
    for r in results:
        if r["threads"] != 1 or r["onednn"] is False:
            continue
        xs = [r["macs_ratios"][t] for t in subnets[1:]]
        ys = [r["ratios"][t] for t in subnets[1:]]
        name = "Paddle Inference oneDNN" if r["runtime"] == "paddle" else "onnxruntime"
        ax.scatter(xs, ys, marker=styles[r["setting"]], color=colours[(r["runtime"], r["onednn"])], s=18,
                   label=f"{name}, {r['setting']}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    save(fig, ax, path, legend_outside=True)


def table(results: list[dict], subnets: list[str]) -> str:
    """Markdown: one row per setting; each subnet's latency ratio / MACs ratio, marked when over the goal."""
    header = "| runtime | threads | setting | full (ms) | " + " | ".join(subnets[1:]) + " |"
    lines = [header, "|" + "---|" * (4 + len(subnets) - 1)]
    for r in results:
        runtime = r["runtime"] + ("" if r["onednn"] is None else (" oneDNN" if r["onednn"] else " plain"))
        cells = []
        for t in subnets[1:]:
            ratio, macs = r["ratios"][t], r["macs_ratios"][t]
            cells.append(f"{ratio:.2f} / {macs:.2f}" + (" ✗" if ratio > GOAL * macs else ""))
        lines.append(f"| {runtime} | {r['threads']} | {r['setting']} | {r['full_ms']:.2f} | " + " | ".join(cells) + " |")
    return ("Latency ratio to the full model / MACs ratio, medians over rounds in which the models took turns; "
            f"✗: latency ratio > {GOAL} x MACs ratio.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
