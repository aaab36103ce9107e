#!/usr/bin/env python
"""Benchmark figure: which widths the gates choose, against the targets (no training; reads results).

    python bench/gate_widths.py --task sst-2 --out docs/figures/sst-2-gate-widths.png \\
        --run "targets=bench_out/dynamic/sst-2/gate" --run "routes=bench_out/routes/sst-2-warm-t0.4-c50"

Each ``--run LABEL=DIR`` is a ``--stage gate`` output directory.  For every run and gate, the share
of dev inputs the gates send to each width (the gated model as the evaluation that was kept ran
it: ``eval_results.json`` ``gates[g].chosen_distribution``), beside the dev targets' distribution
(the smallest width that is right).  A bar chart, one panel per run, and a table on stdout with
each gate's accuracy against the targets and the majority rate it must beat.
"""
from __future__ import annotations

import argparse

from benchlib import save

from ofa_flexbert.store.outputs import read_eval_results  # noqa: E402  -- after benchlib, which puts the project on the path


def parse_run(text: str) -> tuple[str, str]:
    label, _, path = text.partition("=")
    if not path:
        raise SystemExit(f"--run {text}: expected LABEL=DIR")
    return label, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--run", action="append", required=True, type=parse_run, help="LABEL=gate stage output dir")
    parser.add_argument("--out", required=True, help="PNG path")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = []
    for label, path in args.run:
        results = read_eval_results(path)
        if results is None or "gates" not in results:
            raise SystemExit(f"--run {label}={path}: no gate stage eval_results.json there")
        runs.append((label, results))
    widths = runs[0][1]["settings"]["class_widths"]
    fig, panels = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 1.5, 3.6), sharey=True, squeeze=False)
    print("| run | gate | accuracy against targets | majority rate | balanced accuracy | chosen " +
          " / ".join(f"w{w:g}" for w in widths) + " |")
    print("|---|---|---|---|---|---|")
    for ax, (label, results) in zip(panels[0], runs):
        gates = results["gates"]
        columns = [("targets", results["targets"]["distribution"])] + \
                  [(f"gate {g}", gate["chosen_distribution"]) for g, gate in enumerate(gates)]
        bottom = np.zeros(len(columns))
        for k, width in enumerate(widths):
            share = np.array([dist[k] for _, dist in columns])
            ax.bar(range(len(columns)), share, bottom=bottom, label=f"width {width:g}")
            bottom += share
        ax.set_xticks(range(len(columns)), [name for name, _ in columns], rotation=45, ha="right", fontsize="small")
        gated = results["gated"]
        metric = results["metric"]
        ax.set_title(f"{label}: {metric} {gated['metrics'][metric]:.4f} at {gated['macs_share']:.0%} MACs",
                     fontsize="small")
        for g, gate in enumerate(gates):
            print(f"| {label} | {g} | {gate['accuracy']:.3f} | {gate['majority_rate']:.3f} | "
                  f"{gate['balanced_accuracy']:.3f} | " + " / ".join(f"{s:.0%}" for s in gate["chosen_distribution"]) + " |")
    panels[0][0].set_ylabel("share of dev inputs")
    fig.suptitle(f"{args.task}: widths the gates choose (dev)", fontsize="medium")
    save(fig, panels[0][-1], args.out, legend_outside=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
