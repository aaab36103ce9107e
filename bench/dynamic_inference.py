#!/usr/bin/env python
"""Benchmark: dynamic inference against the static grid, on a depth-stage model (issue #17).

    GLUE_DIR=../shared/data/glue python bench/dynamic_inference.py --task sst-2 \
        --model_dir bench_out/meanpipe/depth/sst-2 --teacher bench_out/meanpipe/teachers/sst-2-... \
        --out bench_out/dynamic/sst-2 --budgets 0.3,0.5,0.7 --extra --num_threads 1

Runs what a user runs, each step skipped when its output is complete (so the script resumes):
``--stage gate`` on the model (gates and off-ramps, the task's config section), ``--stage search`` on the
gated model, then ``--stage infer`` for the setting search chose under each budget, for the best static
subnet under the same budget, and for the full model (latency at batch 1 and throughput at batch 32, all
on this machine in one run).  Writes ``<out>/results.md`` and copies the search plot to ``<out>/pareto.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from benchlib import atomic_write, load, stage

from ofa_flexbert.adaptive.setting import Plan, entry_of  # noqa: E402  -- the stage's own reading
from ofa_flexbert.adaptive.tradeoff import best_under_budget  # noqa: E402  -- the stage's own rule


def chosen(points: list[dict], budget: float, mode: str | None = None) -> dict | None:
    """The search stage's choice under ``budget`` (search half), optionally within one mode."""
    rows = [p for p in points if mode is None or p["mode"] == mode]
    best = best_under_budget([p["search"]["macs_share"] for p in rows], [p["search"]["metric"] for p in rows], budget)
    return None if best is None else rows[best]


def infer(task: str, gate_dir: str, out: str, row: dict, extra: list[str]) -> dict:
    """``--stage infer`` of one setting (via an inference config file, as a user would); its summary."""
    os.makedirs(out, exist_ok=True)
    config = os.path.join(out, "setting.json")
    atomic_write(config, json.dumps({task: entry_of(row)}) + "\n")
    stage(task, "infer", gate_dir, out, ["--inference_config", config, *extra])
    return load(os.path.join(out, "infer_results.json"))


def gate_lines(gated: dict, metric: str) -> list[str]:
    """What the gate stage measured on dev: target distribution, each gate against its targets, the off-ramps."""
    widths = gated["settings"]["gate_setting"]
    dist = ", ".join(f"w{w:g} {share:.1%}" for w, share in zip(widths, gated["targets"]["distribution"]))
    lines = [f"Gate targets on dev (smallest right width): {dist}.", "",
             "| gate | accuracy | balanced acc. | majority rate | chosen widths |", "|---|---|---|---|---|"]
    for g, gate in enumerate(gated["gates"]):
        chosen_widths = ", ".join(f"w{w:g} {share:.0%}" for w, share in zip(widths, gate["chosen_distribution"]))
        lines.append(f"| {g} | {gate['accuracy']:.3f} | {gate['balanced_accuracy']:.3f} | {gate['majority_rate']:.3f} "
                     f"| {chosen_widths}{' (one class)' if gate.get('single_class') else ''} |")
    ramps = "; ".join(f"after layer {r['layer']}: {metric} {r['metrics'][metric]:.4f}, agrees with the final head on "
                      f"{r['agreement_with_final']:.1%}" for r in gated.get("off_ramps") or [])
    return lines + (["", f"Off-ramps (dev): {ramps}."] if ramps else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True, help="a depth- or final-stage output directory")
    parser.add_argument("--teacher", required=True, help="the finetune-stage output (its dev metric is the bar)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budgets", default="0.3,0.5,0.7", help="MACs budgets (shares of the full model)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for every stage")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    gate_dir, search_dir = os.path.join(args.out, "gate"), os.path.join(args.out, "search")
    stage(args.task, "gate", args.model_dir, gate_dir, args.extra)
    stage(args.task, "search", gate_dir, search_dir, args.extra)
    search = load(os.path.join(search_dir, "search_results.json"))
    points, metric = search["points"], search["metric"]
    teacher = load(os.path.join(args.teacher, "eval_results.json"))["subnets"][0]["metrics"][metric]
    gated = load(os.path.join(gate_dir, "eval_results.json"))
    full_row = next(p for p in points if p["mode"] == "static" and p["width_mult_list"] == [1.0] and p["depth_mult"] == 1.0)
    full = infer(args.task, gate_dir, os.path.join(args.out, "infer-full"), full_row, args.extra)
    lines = [f"{args.task}: dev split in halves ({search['parts']['search']} search, {search['parts']['held_out']} "
             f"held-out inputs, seed {search['seed']}); teacher dev {metric} {teacher:.4f}; the model's full size "
             f"{full_row['dev']['metric']:.4f} on dev, {full_row['held_out']['metric']:.4f} held-out.", "",
             "Best setting per family under each MACs budget, chosen on the search half; held-out and whole-dev "
             "figures; latency per input at batch 1 (median) and throughput at batch 32 from `--stage infer`.", "",
             f"| budget | family | setting | held-out {metric} | held-out MACs | dev {metric} | dev MACs | layers "
             "| batch-1 ms | batch-32 /s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for budget in budgets:
        for mode in ("static", "d_dynamic", "w_dynamic", "wd_dynamic", None):
            row = chosen(points, budget, mode)
            if row is None:
                continue
            name = f"infer-b{budget:g}-{mode or 'any'}"
            summary = infer(args.task, gate_dir, os.path.join(args.out, name), row, args.extra)
            lines.append(f"| {budget:.0%} | {mode or '**chosen**'} | {Plan.from_entry(row).describe()} | {row['held_out']['metric']:.4f} "
                         f"| {row['held_out']['macs_share']:.0%} | {summary['metrics'][metric]:.4f} | "
                         f"{summary['macs_share']:.0%} | {summary['mean_layers']:.2f} | "
                         f"{summary['latency_ms_batch1_median']:.2f} | {summary['throughput_per_s_batch32']:.0f} |")
    lines += ["", f"Full model: dev {metric} {full['metrics'][metric]:.4f}, batch-1 median "
              f"{full['latency_ms_batch1_median']:.2f} ms, batch-32 {full['throughput_per_s_batch32']:.0f} inputs/s.",
              "", *gate_lines(gated, metric)]
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(args.out, "results.md"), text)
    shutil.copyfile(os.path.join(search_dir, "pareto.png"), os.path.join(args.out, "pareto.png"))
    print(text)


if __name__ == "__main__":
    main()
