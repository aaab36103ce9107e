"""Does per-input routing beat static subnets of equal cost?  Gate variants, cascades, early exit, the oracle.

What a user runs, on one depth- or final-stage model: ``--stage gate`` once per gate variant (by
default the reference's training, ``--gate_features target``, against the no-leak default
``all_widths``, and ``--gate_target agree``), then ``--stage search`` on each gated model with
several seeds (each seed halves dev differently: search half / held-out half).  Every run resumes
or is skipped when complete, so the benchmark continues across sessions.

Reported per budget (share of the full model's MACs) and family, as mean and range over seeds:
the held-out metric of the setting the search chose on the search half, and its gain over the
**static frontier** -- the upper convex hull of the static subnets' held-out points, at the chosen
setting's held-out MACs (a random mix of two static subnets reaches any point on it, so that is
what "equal cost" must beat; ``tradeoff.upper_hull``).  Beside them, from each gate stage (whole
dev): the gated model, its random routes and perfect gates; from each search: perfect gates.

    GLUE_DIR=../shared/data/glue python bench/routing.py --task mrpc \\
        --model_dir bench_out/mrpc/depth --out bench_out/routing/mrpc --seeds 1,2,3 --extra --num_threads 1
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchlib import atomic_write, axes, load, save, stage

from ofa_flexbert.adaptive.setting import Mode, Plan  # noqa: E402  -- the stage's own reading
from ofa_flexbert.adaptive.tradeoff import best_under_budget, hull_value, pareto_front, upper_hull  # noqa: E402

VARIANTS = {"reference": ["--gate_features", "target"], "no-leak": ["--gate_features", "all_widths"],
            "no-leak+agree": ["--gate_features", "all_widths", "--gate_target", "agree"],
            "agree-2gates": ["--gate_features", "all_widths", "--gate_target", "agree", "--num_gates", "2"],
            "agree+probe": ["--gate_features", "all_widths", "--gate_target", "agree", "--gate_inputs", "pooled+probe"]}
GATED = (Mode.W_DYNAMIC, Mode.WD_DYNAMIC)


def in_modes(*modes: Mode):
    """A family of settings by mode; for gated modes, the argmax gates only (ranked gates are their own family)."""
    return lambda p: p["mode"] in modes and p.get("gate_threshold") is None


def ranked(p: dict) -> bool:
    """Ranked gates: a gated setting with a --gate_threshold."""
    return p["mode"] in GATED and p.get("gate_threshold") is not None


def chosen(points: list[dict], budget: float, member) -> dict | None:
    """The search stage's choice under ``budget`` (search half) among the points ``member`` accepts."""
    rows = [p for p in points if member(p)]
    best = best_under_budget([p["search"]["macs_share"] for p in rows], [p["search"]["metric"] for p in rows], budget)
    return None if best is None else rows[best]


def frontier(points: list[dict]) -> list[tuple[float, float]]:
    """The static frontier on the held-out half."""
    statics = [p for p in points if p["mode"] == Mode.STATIC]
    return upper_hull([p["held_out"]["macs_share"] for p in statics], [p["held_out"]["metric"] for p in statics])


def families(searches: dict[str, dict[int, dict]]) -> dict[str, tuple[str, object]]:
    """Family name -> (the gate variant whose search it is read from, which of its points belong):
    static, early exit, cascade, then per variant its argmax gates and, where its searches tried
    them (--gate_thresholds), its ranked gates."""
    variants = list(searches)
    out = {"static": (variants[0], in_modes(Mode.STATIC)), "early exit": (variants[0], in_modes(Mode.D_DYNAMIC)),
           "cascade": (variants[0], in_modes(Mode.CASCADE))}
    for v in variants:
        out[f"gates ({v})"] = (v, in_modes(*GATED))
        if any(ranked(p) for search in searches[v].values() for p in search["points"]):
            out[f"ranked gates ({v})"] = (v, ranked)
    return out


def summarise(searches: dict[str, dict[int, dict]], budgets: list[float]) -> dict:
    """Per family and budget, per seed: the chosen setting, its held-out metric and gain over the frontier."""
    table: dict = {}
    for family, (variant, member) in families(searches).items():
        for budget in budgets:
            cells = []
            for seed, search in sorted(searches[variant].items()):
                row = chosen(search["points"], budget, member)
                if row is None:
                    continue
                held = row["held_out"]
                bar = hull_value(frontier(search["points"]), held["macs_share"])
                cells.append({"seed": seed, "setting": Plan.from_entry(row).describe(), "metric": held["metric"],
                              "macs_share": held["macs_share"], "gain": None if bar is None else held["metric"] - bar})
            table.setdefault(family, {})[str(budget)] = cells
    return table


def spread(values: list[float], scale: float = 100.0) -> str:
    """``mean [min, max]`` in points (×100)."""
    if not values:
        return "-"
    v = np.array(values) * scale
    return f"{v.mean():+.2f} [{v.min():+.2f}, {v.max():+.2f}]" if scale == 100.0 else f"{v.mean():.4f}"


def markdown(task: str, table: dict, gates: dict[str, dict], searches: dict[str, dict[int, dict]],
             budgets: list[float], metric: str) -> str:
    """The tables docs/benchmarks.md shows."""
    lines = [f"**{task}**: held-out {metric} of the setting chosen on the search half, and its gain over the static "
             f"frontier at the same held-out MACs, in points: mean [min, max] over seeds "
             f"{', '.join(str(s) for s in sorted(next(iter(searches.values()))))}.", "",
             "| family | " + " | ".join(f"≤ {b:.0%}: {metric}, MACs | gain" for b in budgets) + " |",
             "|---|" + "---|---|" * len(budgets)]
    for family, per_budget in table.items():
        cells = []
        for b in budgets:
            chosen_cells = per_budget[str(b)]
            if not chosen_cells:
                cells += ["-", "-"]
                continue
            cells.append(f"{np.mean([c['metric'] for c in chosen_cells]):.4f}, "
                         f"{np.mean([c['macs_share'] for c in chosen_cells]):.0%}")
            gains = [c["gain"] for c in chosen_cells if c["gain"] is not None]
            cells.append(spread(gains))
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", "Gate stage (whole dev): the gated model beside its random routes and perfect gates; per gate, "
              "the share of inputs choosing what the previous gate chose.", "",
              f"| gates | gated {metric}, MACs | random routes (3 deals) | perfect gates | same choice as previous gate |",
              "|---|---|---|---|---|"]
    for variant, results in gates.items():
        g, r, o = results["gated"], results["random_routes"], results["oracle"]
        copies = " ".join("-" if s["agreement_with_previous"] is None else f"{s['agreement_with_previous']:.2f}"
                          for s in results["gates"])
        lines.append(f"| {variant} | {g['metrics'][metric]:.4f}, {g['macs_share']:.0%} | "
                     f"{r['metrics'][metric]:.4f} ({', '.join(f'{x:.4f}' for x in r['per_seed'])}) | "
                     f"{o['metrics'][metric]:.4f}, {o['macs_share']:.0%} | {copies} |")
    oracles = [s["oracle"] for runs in searches.values() for s in runs.values() if s.get("oracle")]
    if oracles:
        lines += ["", f"Perfect gates on the held-out half (search stage, mean over seeds and variants): "
                  f"{np.mean([o['held_out']['metric'] for o in oracles]):.4f} at "
                  f"{np.mean([o['held_out']['macs_share'] for o in oracles]):.0%} of the MACs."]
    return "\n".join(lines) + "\n"


def figure(task: str, searches: dict[str, dict[int, dict]], path: str, metric: str) -> None:
    """One seed's held-out points: the static subnets and their hull, each family's front, perfect gates."""
    variants = list(searches)
    seed = min(searches[variants[0]])
    fig, ax = axes("MACs (share of the full model, held-out half)", f"{metric} (held-out half)",
                   f"{task}: routing against static subnets (split seed {seed})")
    base = searches[variants[0]][seed]["points"]
    statics = [p for p in base if p["mode"] == Mode.STATIC]
    ax.plot([p["held_out"]["macs_share"] for p in statics], [p["held_out"]["metric"] for p in statics], "s",
            color="0.45", markersize=4, label="static subnets")
    hull = frontier(base)
    ax.plot([c for c, _ in hull], [v for _, v in hull], "-", color="0.45", linewidth=1, label="static frontier (hull)")
    colours = iter(["tab:blue", "tab:purple", "tab:red", "tab:orange", "tab:green", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan"] * 2)
    for label, (variant, member) in families(searches).items():
        if label == "static":
            continue
        points = [p for p in searches[variant][seed]["points"] if member(p)]
        keep = pareto_front([p["search"]["macs_share"] for p in points], [p["search"]["metric"] for p in points])
        front = sorted((points[i]["held_out"]["macs_share"], points[i]["held_out"]["metric"]) for i in keep)
        if front:  # the family's front chosen on the search half, drawn at its held-out values
            ax.plot(*zip(*front), marker=".", color=next(colours), label=label, linewidth=1)
    oracle = searches[variants[0]][seed].get("oracle")
    if oracle:
        ax.plot([oracle["held_out"]["macs_share"]], [oracle["held_out"]["metric"]], "o", markerfacecolor="none",
                color="black", markersize=8, label="perfect gates")
    ax.set_xlim(0, 1.02)
    save(fig, ax, path, legend_outside=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True, help="a depth- or final-stage output directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"gate variants, of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="1,2,3", help="search seeds: one search/held-out split each")
    parser.add_argument("--budgets", default="0.3,0.4,0.5", help="MACs budgets (shares of the full model)")
    parser.add_argument("--report", help="where to write the tables and the figure, without extension "
                                         "(default: <out>/routing, i.e. routing.md, routing.json, routing.png)")
    parser.add_argument("--figure", help="where to write the figure (default: <report>.png)")
    parser.add_argument("--search_name", default="search",
                        help="the searches' folder prefix: <out>/<name>-<variant>-s<seed> (a new name re-runs them, "
                             "e.g. after the search learned new settings)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for every stage")
    args = parser.parse_args()
    variants = args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    gates, searches = {}, {}
    for variant in variants:
        gate_dir = os.path.join(args.out, f"gate-{variant}")
        stage(args.task, "gate", args.model_dir, gate_dir, VARIANTS[variant] + args.extra)
        gates[variant] = load(os.path.join(gate_dir, "eval_results.json"))
        searches[variant] = {}
        for seed in seeds:
            out = os.path.join(args.out, f"{args.search_name}-{variant}-s{seed}")
            stage(args.task, "search", gate_dir, out, ["--seed", str(seed), *args.extra])
            searches[variant][seed] = load(os.path.join(out, "search_results.json"))
    metric = gates[variants[0]]["metric"]
    table = summarise(searches, budgets)
    report = args.report or os.path.join(args.out, "routing")
    atomic_write(report + ".json", json.dumps({"task": args.task, "table": table}, indent=1))
    text = markdown(args.task, table, gates, searches, budgets, metric)
    atomic_write(report + ".md", text)
    figure(args.task, searches, args.figure or report + ".png", metric)
    print(text)


if __name__ == "__main__":
    main()
