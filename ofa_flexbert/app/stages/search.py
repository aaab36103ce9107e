"""Stage ``search``: the accuracy-cost trade-off of a gated model, found instead of hand-tuned.

Searched: the static grid (--width_mult_list x --depth_mult_list), depth-dynamic inference
(each width x each exit threshold), width-dynamic inference (every class -> width map,
``tradeoff.width_maps``), width+depth-dynamic inference (maps x thresholds) and confidence
cascades (every chain of two or three static subnets of increasing cost x thresholds,
``tradeoff.cascade_chains``; one threshold for every stage of a chain).

Which data, and why (a decision): the training split is out (the model fits it, so its exits
would look free) and GLUE's test labels are hidden, so dev is split in two halves, stratified by
label (``tradeoff.split_halves``, seeded by --seed).  The *search* half chooses the Pareto front
and the setting under --macs_budget; the *held-out* half measures them, and only its figures are
plotted.  Both halves were seen by the earlier stages' checkpoint selection, which favours no
mode over another.  Every figure is also given for the whole of dev, which is what
``--stage infer`` with the written inference config reports.

One engine: each map (and each static width) is one pass of ``adaptive.runner.DynamicModel`` over dev at
full depth with the off-ramps' predictions recorded; an exit threshold is then replayed from the
record (an input leaves at the first off-ramp whose entropy is below it), so forty thresholds
cost one pass.  A cascade is replayed from the static subnets' passes the same way
(``tradeoff.cascade_answers``).  The replay is the exit check's (the cascade's) own rule, and a
test runs the chosen setting through ``--stage infer`` and gets the same metric and MACs.

Cascades are many (286 chains of the 12 static subnets, each at 40 thresholds), so only those on
the cascade family's own front on the search half are written and plotted; the count tried is
logged.  Nothing is lost by it: the best setting under a budget is on its family's front.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import paddle
from tqdm import tqdm

from ofa_flexbert.adaptive.runner import DynamicModel
from ofa_flexbert.adaptive.setting import Mode, Plan, entry_of
from gate.io import load_gates, load_off_ramps
from gate.modules import FeatureRecorder
from gate.diagnostics import at_class
from gate.ramps import entropy
from gate.targets import good_enough, smallest_enough

from ofa_flexbert.app import plots
from ofa_flexbert.engine.accounting import sequence_lengths, subnet_macs
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.glue.metrics import compute_metrics
from ofa_flexbert.store.outputs import PARETO_PLOT, recorded_depth_rule, write_run_info, write_search_results
from ofa_flexbert.engine.routes import Route
from ofa_flexbert.adaptive.tradeoff import (best_under_budget, cascade_answers, cascade_chains, default_thresholds,
                                            exit_steps, pareto_front, split_halves, width_maps)
from .begin import start
from .inputs import check_pooling
from .preamble import dev_data, evaluation_model
from ofa_flexbert.app.report import StageReport

logger = logging.getLogger("ofa_flexbert")



@dataclass
class Recorded:
    """One pass over dev without exits: final logits [N, C], each off-ramp's logits [R, N, C],
    and the route each input took (the gates' widths)."""

    logits: np.ndarray
    ramp_logits: np.ndarray
    routes: list[Route]


@dataclass
class Outcome:
    """What a setting does to each dev input: logits [N, C] and MACs [N]."""

    plan: Plan
    logits: np.ndarray
    macs: np.ndarray
    layers: np.ndarray


def record(dynamic: DynamicModel, loader, ramps) -> Recorded:
    """Run ``dynamic`` (no exits) over ``loader``, recording every off-ramp's logits on the way."""
    steps = {layer + 1: i for i, layer in enumerate(ramps.layers)} if ramps is not None else {}
    logits, ramp_logits, routes = [], [], []
    for batch in loader:
        recorder = FeatureRecorder(sorted(steps), read=lambda state: ramps.head(steps[state.step])(state.pooled()))
        batch_logits, batch_routes = dynamic.run(batch, first=recorder if steps else None)
        logits.append(batch_logits)
        routes.extend(batch_routes)
        ramp_logits.append(np.stack([x.numpy() for x in recorder.features]) if steps else np.zeros((0,) + batch_logits.shape))
    return Recorded(np.concatenate(logits), np.concatenate(ramp_logits, axis=1), routes)


def replay(plan: Plan, recorded: Recorded, dynamic: DynamicModel, lengths: list[int], ramps,
           thresholds: list[float]) -> list[Outcome]:
    """The outcome of ``plan`` without exits, or, when it exits, of each threshold, from one record.

    MACs per input come from ``dynamic.macs`` on the route cut at the exit, as ``--stage infer``
    counts them; a table of them per possible exit makes a threshold a lookup.
    """
    if not plan.exits:
        macs = np.array([dynamic.macs(r, t) for r, t in zip(recorded.routes, lengths)], dtype="float64")
        layers = np.array([len(r.executed) for r in recorded.routes])
        return [Outcome(plan, recorded.logits, macs, layers)]
    exits = [layer + 1 for layer in ramps.layers]
    table = np.array([[dynamic.macs(dataclasses.replace(r, exit_after=e), t) for e in exits] + [dynamic.macs(r, t)]
                      for r, t in zip(recorded.routes, lengths)], dtype="float64")  # [N, R + 1]
    entropies = np.stack([entropy(paddle.to_tensor(x), plan.normalized_entropy).numpy() for x in recorded.ramp_logits], axis=1)
    full_layers = np.array([len(r.layers) for r in recorded.routes])
    rows = np.arange(len(lengths))
    outcomes = []
    for threshold in thresholds:
        leave = exit_steps(entropies, threshold)
        logits = recorded.logits.copy()
        left = leave >= 0
        logits[left] = recorded.ramp_logits[leave[left], rows[left]]
        macs = table[rows, np.where(left, leave, len(exits))]
        layers = np.where(left, np.array(exits)[np.maximum(leave, 0)], full_layers)
        outcomes.append(Outcome(plan.replace(exit_threshold=threshold), logits, macs, layers))
    return outcomes


def cascade_outcomes(statics: list[Outcome], task: TaskSpec, labels: np.ndarray, search_idx: np.ndarray,
                     thresholds: list[float], normalized: bool) -> list[Outcome]:
    """The confidence cascades on the cascade family's front (search half), from the static passes.

    Each chain of :func:`tradeoff.cascade_chains` is replayed at every threshold: an input's logits
    are those of the stage that answers it (:func:`tradeoff.cascade_answers`), its MACs the sum of
    the stages it ran -- what ``--stage infer --cascade`` runs and counts.
    """
    entropies = [entropy(paddle.to_tensor(o.logits), normalized).numpy() for o in statics]
    chains = cascade_chains([float(o.macs.mean()) for o in statics])
    rows = np.arange(len(labels))

    def outcome(chain: tuple[int, ...], threshold: float) -> Outcome:
        answer = cascade_answers(np.stack([entropies[i] for i in chain]), [threshold] * (len(chain) - 1))
        logits = np.stack([statics[i].logits for i in chain])[answer, rows]
        spent = np.cumsum(np.stack([statics[i].macs for i in chain]), axis=0)[answer, rows]  # every stage it ran
        layers = np.cumsum(np.stack([statics[i].layers for i in chain]), axis=0)[answer, rows]
        plan = Plan(mode=Mode.CASCADE, widths=tuple(statics[i].plan.widths[0] for i in chain),
                    depths=tuple(statics[i].plan.depth_mult for i in chain),
                    thresholds=(threshold,) * (len(chain) - 1), normalized_entropy=normalized)
        return Outcome(plan, logits, spent, layers)

    tried, costs, scores = [], [], []
    for chain in chains:
        for threshold in thresholds:
            o = outcome(chain, threshold)
            tried.append((chain, threshold))
            costs.append(float(o.macs[search_idx].mean()))
            scores.append(compute_metrics(task, o.logits[search_idx], labels[search_idx])[task.primary_metric])
    front = pareto_front(costs, scores)
    logger.info(f"search {task.name}: {len(tried)} cascades tried ({len(chains)} chains x {len(thresholds)} "
                f"thresholds), the {len(front)} on their front kept")
    return [outcome(*tried[i]) for i in front]


def search_groups(args: RunArgs, gates, can_exit: bool) -> list[list[Plan]]:
    """The settings to try, grouped by the pass they are replayed from (same routes, same logits):
    per width, static and d-dynamic; per class -> width map, w- and wd-dynamic; then the static
    subnets of the shallower depths.  An exiting plan is replayed at every threshold."""
    widths = sorted(set(args.width_mult_list))
    exits = [True] if can_exit else []
    norm = args.normalized_entropy
    groups = [[Plan(mode=Mode.STATIC, widths=(w,))]
              + [Plan(mode=Mode.D_DYNAMIC, widths=(w,), early_exit=True, normalized_entropy=norm) for _ in exits]
              for w in widths]
    if gates is not None:
        groups += [[Plan(mode=Mode.W_DYNAMIC, widths=m)]
                   + [Plan(mode=Mode.WD_DYNAMIC, widths=m, early_exit=True, normalized_entropy=norm) for _ in exits]
                   for m in width_maps(widths, gates.settings.num_classes)]
    groups += [[Plan(mode=Mode.STATIC, widths=(w,), depth_mult=d)] for d in sorted(set(args.depth_mult_list) - {1.0})
               for w in widths]
    return groups


def perfect_gates(statics: list[Outcome], task: TaskSpec, labels: np.ndarray, tolerance: float,
                  rule: str) -> Optional[Outcome]:
    """Perfect gates over the full-depth static widths: each input at its target width (``rule``,
    the gates' --gate_target), deciding for free -- the ceiling of width routing on these targets,
    as ``--stage gate`` reports it.  None with fewer than two such widths."""
    full_depth = sorted((o for o in statics if o.plan.depth_mult == 1.0), key=lambda o: o.plan.widths[0])
    if len(full_depth) < 2:
        return None
    targets = smallest_enough(good_enough(task, [o.logits for o in full_depth], labels, tolerance, rule))
    stack = lambda key: np.stack([getattr(o, key) for o in full_depth])  # noqa: E731
    plan = Plan(mode=Mode.W_DYNAMIC, widths=tuple(o.plan.widths[0] for o in full_depth))
    return Outcome(plan, at_class(stack("logits"), targets), at_class(stack("macs"), targets),
                   at_class(stack("layers"), targets))


def summarise(outcome: Outcome, task: TaskSpec, labels: np.ndarray, full: np.ndarray,
              parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """A setting's JSON row: its settings, then per part of dev (search, held-out, dev) the metrics,
    mean MACs and their share of the full model's, and the mean number of layers run."""
    row: dict[str, Any] = outcome.plan.to_entry()
    for name, idx in parts.items():
        metrics = compute_metrics(task, outcome.logits[idx], labels[idx])
        row[name] = {"metric": metrics[task.primary_metric], "metrics": metrics, "macs": float(outcome.macs[idx].mean()),
                     "macs_share": float(outcome.macs[idx].mean() / full[idx].mean()),
                     "mean_layers": float(outcome.layers[idx].mean())}
    return row


def run(args: RunArgs) -> StageReport:
    """``--stage search``: sweep, keep the Pareto front, write the best setting under --macs_budget."""
    started = time.time()
    task, tokenizer = start(args)
    model = evaluation_model(args.model_dir, task, check_pooling(args))
    gates, ramps = load_gates(args.model_dir), load_off_ramps(args.model_dir)  # the search tries what there is
    rule = recorded_depth_rule(args.model_dir) or "prefix"
    can_exit = ramps is not None and bool(ramps.layers) and not task.is_regression and rule == "prefix"
    if not can_exit:
        why = ("a regression task" if task.is_regression else f"--depth_rule {rule} model" if rule != "prefix"
               else "no off-ramps (off_ramps.json)")
        logger.info(f"search {task.name}: no early exit ({why})")
    if gates is None:
        logger.info(f"search {task.name}: no gates (gates.json) in {args.model_dir}: static and d-dynamic only")
    dev = dev_data(args, task, tokenizer)
    split, dataset, loader = dev.split, dev.dataset, dev.loader
    lengths = sequence_lengths(loader)
    labels = np.array([row["labels"] for row in dataset])
    search_idx, held_idx = split_halves(labels, args.seed, stratify=not task.is_regression)
    parts = {"search": search_idx, "held_out": held_idx, "dev": np.arange(len(labels))}
    config = model.bert.config
    full = np.array([subnet_macs(config, 1.0, 1.0, t) for t in lengths], dtype="float64")
    thresholds = args.exit_thresholds or default_thresholds(task.num_labels, args.normalized_entropy)
    rows: list[dict[str, Any]] = []
    statics: list[Outcome] = []
    for group in tqdm(search_groups(args, gates, can_exit), desc=f"search {task.name}", unit="pass", leave=False):
        runner = DynamicModel(model, gates, ramps, group[0], rule)  # the group's plan without exits
        recorded = record(runner, loader, ramps if len(group) > 1 else None)
        for plan in group:
            counter = DynamicModel(model, gates, ramps, plan, rule)  # counts what the plan runs, exit checks included
            outcomes = replay(plan, recorded, counter, lengths, ramps, thresholds)
            statics.extend(o for o in outcomes if o.plan.mode is Mode.STATIC)
            rows.extend(summarise(o, task, labels, full, parts) for o in outcomes)
    if not task.is_regression:
        cascades = cascade_outcomes(statics, task, labels, search_idx, thresholds, args.normalized_entropy)
        rows.extend(summarise(o, task, labels, full, parts) for o in cascades)
    rule = gates.record.get("gate_target", "correct") if gates is not None else "correct"
    oracle = perfect_gates(statics, task, labels, args.regression_tolerance, rule)
    ceiling = None if oracle is None else {**summarise(oracle, task, labels, full, parts), "gate_target": rule}
    return finish_search(args, task, rows, {name: len(idx) for name, idx in parts.items()}, split,
                         time.time() - started, ceiling)


def mark_fronts(rows: list[dict[str, Any]]) -> None:
    """``front``: on the Pareto front of all settings; ``mode_front``: on its own mode's front.
    Both chosen on the search half."""
    def front(idx: list[int]) -> set[int]:
        return {idx[i] for i in pareto_front([rows[j]["search"]["macs_share"] for j in idx],
                                             [rows[j]["search"]["metric"] for j in idx])}

    overall = front(list(range(len(rows))))
    per_mode: set[int] = set()
    for mode in Mode:
        per_mode |= front([i for i, r in enumerate(rows) if r["mode"] == mode])
    for i, row in enumerate(rows):
        row["front"], row["mode_front"] = i in overall, i in per_mode


def finish_search(args: RunArgs, task: TaskSpec, rows: list[dict[str, Any]], sizes: dict[str, int],
                  split: str, seconds: float, oracle: Optional[dict[str, Any]] = None) -> StageReport:
    """search_results.json, inference_config.json (the best setting under --macs_budget), pareto.png
    and VisualDL scalars in --output_dir; the report the CLI prints.  ``oracle``: perfect gates'
    row (:func:`perfect_gates`), reported beside the settings, never chosen."""
    mark_fronts(rows)
    best = best_under_budget([r["search"]["macs_share"] for r in rows], [r["search"]["metric"] for r in rows],
                             args.macs_budget)
    summary = {"task": task.name, "split": split, "parts": sizes, "seed": args.seed, "metric": task.primary_metric,
               "macs_budget": args.macs_budget, "best": best, "seconds": round(seconds, 1), "oracle": oracle,
               "points": rows}
    write_search_results(args.output_dir, summary, None if best is None else {task.name: entry_of(rows[best])})
    plots.pareto(rows, best, os.path.join(args.output_dir, PARETO_PLOT),
                 f"{task.name}: held-out half of {split} ({sizes['held_out']} inputs)", task.primary_metric,
                 oracle=oracle)
    if oracle is not None:
        logger.info(f"search {task.name}: perfect gates ({oracle['gate_target']} targets over widths "
                    f"{','.join(f'{w:g}' for w in oracle['width_mult_list'])}): held-out {task.primary_metric} "
                    f"{oracle['held_out']['metric']:.4f} at {oracle['held_out']['macs_share']:.0%} of the MACs")
    log_fronts(args.output_dir, rows)
    if best is None:
        cheapest = min(r["search"]["macs_share"] for r in rows)
        logger.warning(f"search {task.name}: no setting fits --macs_budget {args.macs_budget:g} (the cheapest costs "
                       f"{cheapest:.0%} of the full model); no inference_config.json written")
    else:
        chosen = rows[best]
        logger.info(f"search {task.name}: best under {args.macs_budget:.0%} of the full model's MACs: "
                    f"{Plan.from_entry(chosen).describe()}: held-out {task.primary_metric} {chosen['held_out']['metric']:.4f} at "
                    f"{chosen['held_out']['macs_share']:.0%}; {os.path.join(args.output_dir, 'inference_config.json')}")
    write_run_info(args, task.name, {"complete": True, "best": entry_of(rows[best]) if best is not None else None})
    gated = None
    if best is not None:
        gated = {"metrics": rows[best]["held_out"]["metrics"], "macs_share": rows[best]["held_out"]["macs_share"],
                 "label": rows[best]["mode"], "depth": rows[best]["depth_mult"]}
    return StageReport("search", task.name, args.output_dir, task.primary_metric, seconds=seconds, gated=gated,
                       front=[r for r in rows if r["front"]])


def log_fronts(output_dir: str, rows: list[dict[str, Any]]) -> None:
    """VisualDL ``search/<mode>``: each mode's front (held-out metric), step = MACs share in per mille."""
    from visualdl import LogWriter

    with LogWriter(logdir=os.path.join(output_dir, "vdl", "search")) as writer:
        for mode in Mode:
            points = sorted((r["held_out"]["macs_share"], r["held_out"]["metric"]) for r in rows
                            if r["mode"] == mode and r["mode_front"])
            for share, metric in points:
                writer.add_scalar(tag=f"search/{mode}", step=int(round(share * 1000)), value=metric)
