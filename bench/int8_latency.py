#!/usr/bin/env python
"""INT8 against float exports: latency, throughput, dev metric and agreement, in one interleaved run.

    python bench/int8_latency.py --task sst-2 --model_dir MODEL --out OUT [--subnets w1_d1,w0.5_d1,...]
        [--teacher_metric 0.8907]

1. Exports every subnet in ``--subnets`` that ``OUT/export`` lacks, float and INT8, as a user would:
   ``--stage export --format onnx --quantize int8`` (resumable; the stage checks each INT8 model on dev
   against its float subnet and records the figures in its manifest).
2. Times, at 1 and 2 threads, on the task's dev inputs at batch 1 and batch 32 (arrival order, padded to
   the longest row, as ``bench/export_latency.py`` does): every float subnet on Paddle Inference with
   oneDNN and on onnxruntime, every INT8 subnet on onnxruntime. Paddle Inference INT8 is not offered
   (docs/decisions.md, "INT8"). All models of a setting take turns in each round (order rotating);
   figures are medians over rounds.
3. Writes ``OUT/int8.json`` and ``OUT/int8.md``: per subnet the float and INT8 dev metric, the share of
   dev predictions they agree on, and per setting each model's median ms, its rows/s at batch 32 and its
   latency as a share of the float full model's on the fastest float runtime at batch 1; and the
   issue's two goals, judged on those figures. ``--replot`` rewrites ``int8.md`` from ``int8.json``.
"""
from __future__ import annotations

import json
import os
import sys

from benchlib import ROOT, atomic_write, run, subnet_bench_parser

import patches  # noqa: F401,E402  -- zlib before paddle

from ofa_flexbert.deploy.predictor import Predictor  # noqa: E402
from ofa_flexbert.deploy.quantize import int8_tag  # noqa: E402
from export_latency import inputs, parse_tag, time_setting  # noqa: E402

FLOAT_RUNTIMES = (("paddle", True), ("onnx", None))  # (runtime, oneDNN) a float subnet is timed on
SPEEDUP_GOAL = 1.5   # INT8 rows/s at batch 32 >= 1.5 x float, with <= MAX_LOSS points lost (SST-2: full, w0.5)
MAX_LOSS = 0.5
SHARE_GOAL = 0.25    # best INT8 subnet within 1 point of the teacher: <= 0.25 x the float teacher's batch-1 ms


def export_missing(args, export_dir: str) -> None:
    missing = [t for t in args.subnets if not (os.path.isfile(os.path.join(export_dir, t, "manifest.json"))
                                               and os.path.isfile(os.path.join(export_dir, int8_tag(t), "manifest.json")))]
    if not missing:
        return
    pairs = [parse_tag(t) for t in missing]
    cmd = [sys.executable, "run_ofa_glue.py", "--task", args.task, "--stage", "export", "--model_dir", args.model_dir,
           "--output_dir", export_dir, "--format", "onnx", "--quantize", "int8", "--overwrite_output_dir",
           "--width_mult", ",".join(f"{w:g}" for w, _ in pairs), "--depth_mult", ",".join(f"{d:g}" for _, d in pairs)]
    if args.data_dir:
        cmd += ["--data_dir", args.data_dir]
    seconds = run(cmd, os.path.join(args.out, "export.log"), append=True)
    print(f"exported {', '.join(missing)} (float and INT8) in {seconds:.0f} s", flush=True)


def model_names(subnets: list[str]) -> dict[str, tuple[str, str, bool | None]]:
    """``{name: (export tag, runtime, oneDNN)}`` of every model a setting times."""
    names = {}
    for tag in subnets:
        names[f"{tag} float paddle"] = (tag, "paddle", True)
        names[f"{tag} float onnx"] = (tag, "onnx", None)
        names[f"{tag} int8 onnx"] = (int8_tag(tag), "onnx", None)
    return names


def accuracy_rows(export_dir: str, subnets: list[str]) -> list[dict]:
    """Per subnet: MACs share, float and INT8 dev metric and their agreement (the export stage's check)."""
    rows = []
    for tag in subnets:
        manifest = json.load(open(os.path.join(export_dir, int8_tag(tag), "manifest.json")))
        check = manifest["check"]
        rows.append({"subnet": tag, "macs_share": manifest["dev_mean_macs"] / manifest["dev_full_mean_macs"],
                     "float_metric": check["float_metric"], "int8_metric": check["int8_metric"],
                     "points_lost": check["points_lost"], "same_predictions": check["same_predictions"]})
    return rows


def main() -> None:
    parser = subnet_bench_parser(__doc__, "w1_d1,w0.75_d1,w0.5_d1,w0.25_d1,w1_d0.67,w0.5_d0.67", 40,
                                 "only rewrite int8.md from int8.json")
    parser.add_argument("--teacher_metric", type=float, help="the fine-tuned teacher's dev metric (for the second goal)")
    parser.add_argument("--export_only", action="store_true", help="only export (time later, on a quiet machine)")
    args = parser.parse_args()
    if args.replot:
        write_report(args.out, json.load(open(os.path.join(args.out, "int8.json"))))
        return
    args.subnets = args.subnets.split(",")
    if args.subnets[0] != "w1_d1":
        sys.exit("--subnets must start with w1_d1 (the full model every share is taken against)")
    os.makedirs(args.out, exist_ok=True)
    export_dir = os.path.join(args.out, "export")
    export_missing(args, export_dir)
    if args.export_only:
        return
    batches = inputs(Predictor(os.path.join(export_dir, args.subnets[0])), args)
    names = model_names(args.subnets)
    timings = []
    for threads in (int(t) for t in args.threads.split(",")):
        predictors = {name: Predictor(os.path.join(export_dir, tag), num_threads=threads, runtime=runtime,
                                      onednn=bool(onednn)) for name, (tag, runtime, onednn) in names.items()}
        for setting in ("b1_dev", "b32_dev"):
            rounds = args.rounds if setting == "b1_dev" else max(5, args.rounds // 5)
            medians = time_setting(predictors, batches[setting], rounds)
            rows_per_batch = len(batches[setting][0][0])
            timings.append({"threads": threads, "setting": setting, "rounds": rounds, "rows": rows_per_batch,
                            "ms": {name: seconds * 1e3 for name, seconds in medians.items()}})
            print(f"threads={threads} {setting}: " + "  ".join(
                f"{name} {seconds * 1e3:.1f}" for name, seconds in medians.items()), flush=True)
        del predictors
    result = {"task": args.task, "model_dir": os.path.abspath(args.model_dir), "subnets": args.subnets,
              "teacher_metric": args.teacher_metric, "accuracy": accuracy_rows(export_dir, args.subnets),
              "timings": timings, "machine": os.uname().nodename, "cpus": os.cpu_count()}
    atomic_write(os.path.join(args.out, "int8.json"), json.dumps(result, indent=2) + "\n")
    write_report(args.out, result)


def write_report(out: str, result: dict) -> None:
    atomic_write(os.path.join(out, "int8.md"), report(result))
    print(f"wrote {os.path.join(out, 'int8.md')}")


def fastest_float_full_ms(timing: dict) -> float:
    """The float full model's median on its fastest runtime in this setting (what every share is against)."""
    return min(timing["ms"]["w1_d1 float paddle"], timing["ms"]["w1_d1 float onnx"])


def report(result: dict) -> str:
    """Markdown: the accuracy table, the timing table per setting, and the two goals judged."""
    subnets, accuracy = result["subnets"], {row["subnet"]: row for row in result["accuracy"]}
    lines = [f"**{result['task']}**: float and INT8 (onnxruntime dynamic quantization) exports on dev.", "",
             "| subnet | MACs | float metric | INT8 metric | points lost | same predictions |", "|---|---|---|---|---|---|"]
    for tag in subnets:
        a = accuracy[tag]
        lines.append(f"| {tag} | {a['macs_share']:.0%} | {a['float_metric']:.4f} | {a['int8_metric']:.4f} | "
                     f"{a['points_lost']:+.2f} | {a['same_predictions']:.3f} |")
    for timing in result["timings"]:
        full = fastest_float_full_ms(timing)
        rows = timing["rows"]
        lines += ["", f"{timing['setting']}, {timing['threads']} thread(s), {timing['rounds']} rounds: median ms per "
                  f"batch of {rows} (share of the float full model on its fastest runtime, {full:.2f} ms)"
                  + (", rows/s" if rows > 1 else ""), "",
                  "| subnet | float, Paddle oneDNN | float, onnxruntime | INT8, onnxruntime | INT8 / float onnxruntime |",
                  "|---|---|---|---|---|"]
        for tag in subnets:
            cells = []
            for kind in ("float paddle", "float onnx", "int8 onnx"):
                ms = timing["ms"][f"{tag} {kind}"]
                cell = f"{ms:.2f} ({ms / full:.2f})"
                cells.append(cell + (f", {rows / ms * 1e3:.0f}/s" if rows > 1 else ""))
            speedup = timing["ms"][f"{tag} float onnx"] / timing["ms"][f"{tag} int8 onnx"]
            lines.append(f"| {tag} | " + " | ".join(cells) + f" | {speedup:.2f}x faster |")
    lines += ["", *goals(result)]
    return "\n".join(lines) + "\n"


def goals(result: dict) -> list[str]:
    """The issue's goals, judged at 1 thread (the figures above)."""
    accuracy = {row["subnet"]: row for row in result["accuracy"]}
    by = {(t["threads"], t["setting"]): t for t in result["timings"]}
    b32, b1 = by.get((1, "b32_dev")), by.get((1, "b1_dev"))
    out = []
    if b32 is not None:
        for tag in (t for t in ("w1_d1", "w0.5_d1") if t in accuracy):
            best_float = min(b32["ms"][f"{tag} float paddle"], b32["ms"][f"{tag} float onnx"])
            speedup = best_float / b32["ms"][f"{tag} int8 onnx"]
            met = speedup >= SPEEDUP_GOAL and accuracy[tag]["points_lost"] <= MAX_LOSS
            out.append(f"- {tag}: INT8 throughput at batch 32 is {speedup:.2f}x the fastest float runtime's, "
                       f"{accuracy[tag]['points_lost']:+.2f} points lost (goal: >= {SPEEDUP_GOAL}x, <= {MAX_LOSS}): "
                       f"{'met' if met else 'NOT met'}")
    teacher = result.get("teacher_metric")
    if b1 is not None and teacher is not None:
        full = fastest_float_full_ms(b1)
        near = [t for t in result["subnets"] if accuracy[t]["int8_metric"] >= teacher - 0.01]
        if not near:
            out.append(f"- no INT8 subnet is within 1 point of the teacher ({teacher:.4f}): goal NOT met")
        else:
            best = min(near, key=lambda t: b1["ms"][f"{t} int8 onnx"])
            share = b1["ms"][f"{best} int8 onnx"] / full
            out.append(f"- fastest INT8 subnet within 1 point of the teacher ({teacher:.4f}): {best}, "
                       f"{accuracy[best]['int8_metric']:.4f}, {share:.2f} of the float full model's batch-1 time "
                       f"(goal <= {SHARE_GOAL}): {'met' if share <= SHARE_GOAL else 'NOT met'}")
    return out


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
