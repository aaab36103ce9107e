"""Stage ``search``: the accuracy-cost trade-off of a gated model, found instead of hand-tuned.

Searched: the static grid (--width_mult_list x --depth_mult_list), depth-dynamic inference
(each width x each exit threshold), width-dynamic inference (every class -> width map,
``tradeoff.width_maps``, gates deciding by argmax; and the gates' own classes at each
--gate_thresholds value, ranked gates), width+depth-dynamic inference (those x exit thresholds) and confidence
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

Cost: MACs, or with --cost latency the milliseconds per input that --stage profile's table
(--cost_table) predicts for the calls each setting's export makes on the predictor's batches
(``adaptive.latency``); fronts, the plot and the choice (--latency_budget) then use it.

INT8 (--quantize int8, with --cost latency): every static subnet also joins in its INT8 form, a family
of its own (``setting.FAMILIES``): its metric is measured by running its quantized ONNX graph on dev
(:func:`quantized_statics`), its milliseconds predicted from --int8_cost_table (``--stage profile
--quantize int8``), its share of the float full model's.  Chosen, it is written with ``"quantize":
"int8"``, and ``--stage export --inference_config`` exports that form.  Only static subnets: a cascade is
replayed exactly from its stages' logits because float logits do not depend on the batch, while INT8
activations are scaled per batch and a cascade re-batches its rows (docs/decisions.md, INT8).
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

from ofa_flexbert.adaptive.latency import (ChainShape, CostTable, check_table, group_ids, per_input_ms, read_cost_table,
                                           segment_shape, table_kernels)
from ofa_flexbert.adaptive.runner import DynamicModel
from ofa_flexbert.adaptive.setting import FAMILIES, QUANTIZED, Mode, Plan, entry_of, family_of
from gate.io import load_gates, load_off_ramps
from gate.modules import FeatureRecorder
from gate.diagnostics import at_class
from gate.ramps import entropy
from gate.targets import good_enough, smallest_enough

from ofa_flexbert.app import plots
from ofa_flexbert.engine.accounting import sequence_lengths, subnet_macs
from ofa_flexbert.config import RunArgs, parse_budget
from ofa_flexbert.errors import UserError
from ofa_flexbert.deploy.grouping import length_groups
from ofa_flexbert.deploy.segments import plan_segments
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.glue.metrics import compute_metrics
from ofa_flexbert.store.outputs import (PARETO_PLOT, recorded_depth_rule, write_run_info,
                                        write_search_results)
from ofa_flexbert.engine.routes import Route
from ofa_flexbert.adaptive.tradeoff import (best_under_budget, cascade_answers, cascade_chains, default_thresholds,
                                            exit_steps, pareto_front, split_halves, width_maps)
from .begin import start
from .inputs import check_pooling
from .preamble import dev_data, evaluation_model, id_batches
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
    """What a setting does to each dev input: logits [N, C] and MACs [N]; ``shape``: the calls its
    predictor makes (``adaptive.latency``), for the latency model."""

    plan: Plan
    logits: np.ndarray
    macs: np.ndarray
    layers: np.ndarray
    shape: Any = None


@dataclass
class Pricing:
    """The latency model applied to dev: the cost table, the inputs' lengths, and per part of dev the
    predictor's batches (indices into dev, grouped by length as ``Predictor`` groups them) and the full
    model's predicted milliseconds per input there."""

    table: CostTable
    lengths: np.ndarray
    groups: dict[str, np.ndarray]  # per part: each input's batch (``latency.group_ids``), -1 outside the part
    full_ms: dict[str, float]
    int8_table: Optional[CostTable] = None  # prices INT8 settings (--int8_cost_table); shares stay the float model's

    @classmethod
    def of(cls, table: CostTable, batch_size: int, lengths: list[int], parts: dict[str, np.ndarray],
           full: tuple[int, int], int8_table: Optional[CostTable] = None) -> "Pricing":
        array = np.asarray(lengths, dtype="int64")
        groups = {name: group_ids([[int(idx[i]) for i in g] for g in length_groups(array[idx].tolist(), batch_size)],
                                  len(array)) for name, idx in parts.items()}
        model = ChainShape((full,), np.zeros(len(array), dtype="int64"))
        return cls(table, array, groups,
                   {name: per_input_ms(table, model, gid, array) for name, gid in groups.items()}, int8_table)

    def ms(self, shape, part: str, quantized: bool = False) -> float:
        table = self.int8_table if quantized else self.table
        return per_input_ms(table, shape, self.groups[part], self.lengths)


def shape_of(plan: Plan, routes: list[Route], layers_run: np.ndarray, gates, ramps) -> Any:
    """The calls a plan's export makes (``adaptive.latency``): a static subnet is one graph per batch; a
    gated or exiting plan is a segment export (``deploy.segments.plan_segments``)."""
    if not plan.gated and not plan.exits:
        route = routes[0]  # a static subnet runs one width in every layer
        return ChainShape(((route.widths[0].heads, len(route.widths)),), np.zeros(len(routes), dtype="int64"))
    segments = plan_segments(routes[0].layers, plan.gated, plan.exits,
                             gates.settings.gate_steps() if plan.gated else (), ramps.layers if plan.exits else ())
    return segment_shape(segments, routes, layers_run, plan.gated, plan.exits)


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
           thresholds: list[float], gates=None) -> list[Outcome]:
    """The outcome of ``plan`` without exits, or, when it exits, of each threshold, from one record.

    MACs per input come from ``dynamic.macs`` on the route cut at the exit, as ``--stage infer``
    counts them; a table of them per possible exit makes a threshold a lookup.
    """
    if not plan.exits:
        macs = np.array([dynamic.macs(r, t) for r, t in zip(recorded.routes, lengths)], dtype="float64")
        layers = np.array([len(r.executed) for r in recorded.routes])
        return [Outcome(plan, recorded.logits, macs, layers, shape_of(plan, recorded.routes, layers, gates, ramps))]
    exits = [layer + 1 for layer in ramps.layers]
    table = np.array([[dynamic.macs(dataclasses.replace(r, exit_after=e), t) for e in exits] + [dynamic.macs(r, t)]
                      for r, t in zip(recorded.routes, lengths)], dtype="float64")  # [N, R + 1]
    entropies = np.stack([entropy(paddle.to_tensor(x), plan.normalized_entropy).numpy() for x in recorded.ramp_logits], axis=1)
    full_layers = np.array([len(r.layers) for r in recorded.routes])
    rows = np.arange(len(lengths))
    shape = shape_of(plan, recorded.routes, full_layers, gates, ramps)  # its widths, once for every threshold
    outcomes = []
    for threshold in thresholds:
        leave = exit_steps(entropies, threshold)
        logits = recorded.logits.copy()
        left = leave >= 0
        logits[left] = recorded.ramp_logits[leave[left], rows[left]]
        macs = table[rows, np.where(left, leave, len(exits))]
        layers = np.where(left, np.array(exits)[np.maximum(leave, 0)], full_layers)
        outcomes.append(Outcome(plan.replace(exit_threshold=threshold), logits, macs, layers,
                                shape.leaving_after(layers)))
    return outcomes


def cascade_outcomes(statics: list[Outcome], task: TaskSpec, labels: np.ndarray, search_idx: np.ndarray,
                     thresholds: list[float], normalized: bool, price=None) -> list[Outcome]:
    """The confidence cascades on the cascade family's front (search half), from the static passes;
    ``price(outcome)``: the cost the front is drawn on (default: mean MACs; with --cost latency the
    predicted milliseconds, so that no cascade the latency front would keep is dropped).

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
        return Outcome(plan, logits, spent, layers, ChainShape(tuple(statics[i].shape.stages[0] for i in chain), answer))

    tried, costs, scores = [], [], []
    for chain in chains:
        for threshold in thresholds:
            o = outcome(chain, threshold)
            tried.append((chain, threshold))
            costs.append(price(o) if price is not None else float(o.macs[search_idx].mean()))
            scores.append(compute_metrics(task, o.logits[search_idx], labels[search_idx])[task.primary_metric])
    front = pareto_front(costs, scores)
    logger.info(f"search {task.name}: {len(tried)} cascades tried ({len(chains)} chains x {len(thresholds)} "
                f"thresholds), the {len(front)} on their front kept")
    return [outcome(*tried[i]) for i in front]


def search_groups(args: RunArgs, gates, can_exit: bool) -> list[list[Plan]]:
    """The settings to try, grouped by the pass they are replayed from (same routes, same logits):
    per width, static and d-dynamic; per class -> width map, w- and wd-dynamic (argmax gates); per
    --gate_thresholds value, w- and wd-dynamic on the gates' own class widths (ranked gates); then
    the static subnets of the shallower depths.  An exiting plan is replayed at every threshold."""
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
    if gates is not None:  # ranked gates: the gates' own classes, the threshold as the cost knob
        own = tuple(gates.settings.class_widths)
        groups += [[Plan(mode=Mode.W_DYNAMIC, widths=own, gate_threshold=t)]
                   + [Plan(mode=Mode.WD_DYNAMIC, widths=own, early_exit=True, normalized_entropy=norm,
                           gate_threshold=t) for _ in exits]
                   for t in args.gate_thresholds]
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
              parts: dict[str, np.ndarray], pricing: Optional[Pricing] = None) -> dict[str, Any]:
    """A setting's JSON row: its settings, then per part of dev (search, held-out, dev) the metrics,
    mean MACs and their share of the full model's, the mean number of layers run and, with a cost
    table (``pricing``), the predicted milliseconds per input and their share of the full model's."""
    row: dict[str, Any] = outcome.plan.to_entry()
    for name, idx in parts.items():
        metrics = compute_metrics(task, outcome.logits[idx], labels[idx])
        row[name] = {"metric": metrics[task.primary_metric], "metrics": metrics, "macs": float(outcome.macs[idx].mean()),
                     "macs_share": float(outcome.macs[idx].mean() / full[idx].mean()),
                     "mean_layers": float(outcome.layers[idx].mean())}
        if pricing is not None and outcome.shape is not None:
            ms = pricing.ms(outcome.shape, name, outcome.plan.quantize is not None)
            row[name].update(latency_ms=ms, latency_share=ms / pricing.full_ms[name])
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
    pricing = latency_pricing(args, config, lengths, parts)
    thresholds = args.exit_thresholds or default_thresholds(task.num_labels, args.normalized_entropy)
    rows: list[dict[str, Any]] = []
    statics: list[Outcome] = []
    for group in tqdm(search_groups(args, gates, can_exit), desc=f"search {task.name}", unit="pass", leave=False):
        runner = DynamicModel(model, gates, ramps, group[0], rule)  # the group's plan without exits
        recorded = record(runner, loader, ramps if len(group) > 1 else None)
        for plan in group:
            counter = DynamicModel(model, gates, ramps, plan, rule)  # counts what the plan runs, exit checks included
            outcomes = replay(plan, recorded, counter, lengths, ramps, thresholds, gates)
            statics.extend(o for o in outcomes if o.plan.mode is Mode.STATIC)
            rows.extend(summarise(o, task, labels, full, parts, pricing) for o in outcomes)
    if args.quantize == "int8":
        quantized = quantized_statics(args, task, statics, loader, rule)
        rows.extend(summarise(o, task, labels, full, parts, pricing) for o in quantized)
    if not task.is_regression:
        price = (lambda o: pricing.ms(o.shape, "search")) if args.cost == "latency" else None
        cascades = cascade_outcomes(statics, task, labels, search_idx, thresholds, args.normalized_entropy, price)
        rows.extend(summarise(o, task, labels, full, parts, pricing) for o in cascades)
    rule = gates.record.get("gate_target", "correct") if gates is not None else "correct"
    oracle = perfect_gates(statics, task, labels, args.regression_tolerance, rule)
    ceiling = None if oracle is None else {**summarise(oracle, task, labels, full, parts), "gate_target": rule}
    return finish_search(args, task, rows, {name: len(idx) for name, idx in parts.items()}, split,
                         time.time() - started, ceiling)


def quantized_statics(args: RunArgs, task: TaskSpec, statics: list[Outcome], loader, rule: str) -> list[Outcome]:
    """Every static subnet in its INT8 form: exported and quantized as ``--stage export --quantize int8`` does
    (the subnet's graph, its ONNX form, onnxruntime's dynamic quantization), in a temporary folder, and run on
    onnxruntime over dev in the batches the export's check runs -- its logits are the INT8 model's own, not
    the float model's with a noise term.  MACs, layers and the calls made are its float twin's (the same
    graph); its time is --int8_cost_table's."""
    import tempfile

    from ofa_flexbert.app.console import quiet_native
    from ofa_flexbert.deploy.graphs import save_onnx, save_static
    from ofa_flexbert.deploy.layout import ONNX_FILE
    from ofa_flexbert.deploy.narrow import shrink
    from ofa_flexbert.deploy.quantize import quantize_onnx
    from ofa_flexbert.deploy.runtime import StaticGraph
    from .begin import math_threads
    from .export import fresh_model

    pooling, threads = check_pooling(args), math_threads(args.num_threads)
    batches = id_batches(loader)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="ofa_flexbert_int8_") as folder:
        for o in tqdm(statics, desc=f"search {task.name}: INT8", unit="subnet", leave=False):
            model = fresh_model(args, task, pooling)
            shrink(model, Route.uniform(model.bert.config, o.plan.widths[0], o.plan.depth_mult, rule))
            float_dir, int8_dir = os.path.join(folder, "float"), os.path.join(folder, "int8")
            for path in (float_dir, int8_dir):
                os.makedirs(path, exist_ok=True)
            with quiet_native(args.verbose):
                save_static(model, float_dir)
                save_onnx(float_dir)
            quantize_onnx(os.path.join(float_dir, ONNX_FILE), os.path.join(int8_dir, ONNX_FILE), args.verbose)
            graph = StaticGraph(int8_dir, threads, runtime="onnx")
            logits = np.concatenate([graph(ids, types) for ids, types in batches])
            outcomes.append(dataclasses.replace(o, plan=o.plan.replace(quantize=QUANTIZED), logits=logits))
    logger.info(f"search {task.name}: {len(outcomes)} static subnets quantized to INT8 and run on onnxruntime")
    return outcomes


def latency_pricing(args: RunArgs, config, lengths: list[int], parts: dict[str, np.ndarray]) -> Optional[Pricing]:
    """The latency model for this search when --cost_table names a table (checked against the model: its
    hidden size and a layer probe at every --width_mult_list width), else None."""
    if not args.cost_table:
        return None
    from ofa_flexbert.engine.routes import config_width, depth_for

    heads = sorted({config_width(config, w).heads for w in args.width_mult_list} | {config.num_attention_heads})
    tables = {}
    for flag, path, int8 in (("--cost_table", args.cost_table, False), ("--int8_cost_table", args.int8_cost_table, True)):
        if not path:
            continue
        tables[int8] = table = read_cost_table(path)
        check_table(table, path, config.hidden_size, heads)
        if (table.meta.get("quantize") == QUANTIZED) != int8:
            raise UserError(f"{flag} {path}: profiled {'without' if int8 else 'with'} --quantize int8; "
                            f"{'--int8_cost_table' if int8 else '--cost_table'} takes "
                            f"{'an INT8' if int8 else 'a float'} table (--stage profile"
                            f"{' --quantize int8' if int8 else ''})")
        unprobed = sorted({depth_for(config.num_hidden_layers, d) for d in args.depth_mult_list}
                          - {k for h in heads for k in table.probed_depths(h)})
        if unprobed:
            logger.warning(f"search: {flag} {path} has no layer probes of {','.join(map(str, unprobed))} layers: "
                           "those subnets are priced from the probes around them (profile with this "
                           "--depth_mult_list for their own; docs/design.md, the latency model)")
        meta = table.meta
        logger.info(f"search: {'INT8 ' if int8 else ''}latency predicted from {path} ({table_kernels(meta)}, "
                    f"{meta.get('num_threads', '?')} thread(s), {meta.get('cpu', 'unknown CPU')}) at batch size "
                    f"{args.latency_batch_size}")
    if True in tables:
        compare_tables(tables[False].meta, tables[True].meta, args.cost_table, args.int8_cost_table)
    pricing = Pricing.of(tables[False], args.latency_batch_size, lengths, parts,
                         (config.num_attention_heads, config.num_hidden_layers), tables.get(True))
    logger.info(f"search: the full model {pricing.full_ms['dev']:.2f} ms per dev input (predicted)")
    return pricing


def compare_tables(float_meta: dict[str, Any], int8_meta: dict[str, Any], float_path: str, int8_path: str) -> None:
    """Float and INT8 settings are ranked against each other, so their tables must time the same machine
    setting: other thread counts or CPUs are refused in one line; another runtime (float settings on
    Paddle Inference, INT8 ones on onnxruntime) is allowed -- it is what a user deploying both would
    compare -- and said in one line (docs/decisions.md, INT8)."""
    for key, what in (("num_threads", "thread count"), ("cpu", "CPU")):
        if float_meta.get(key) != int8_meta.get(key):
            raise UserError(f"--int8_cost_table {int8_path}: profiled with another {what} ({int8_meta.get(key)}) "
                            f"than --cost_table {float_path} ({float_meta.get(key)}); profile both alike")
    if float_meta.get("runtime") != int8_meta.get("runtime"):
        logger.warning(f"search: float settings are priced on {table_kernels(float_meta)}, INT8 ones on "
                       f"{table_kernels(int8_meta)} (--stage profile --runtime onnx prices both on onnxruntime)")


def cost_key(args: RunArgs) -> tuple[str, float]:
    """The row key settings are ranked by (``macs_share``, or ``latency_share`` with --cost latency) and the
    key and budget the written setting is chosen under."""
    if args.cost != "latency":
        return "macs_share", args.macs_budget
    value, in_ms = parse_budget(args.latency_budget)
    return ("latency_ms" if in_ms else "latency_share"), value


def mark_fronts(rows: list[dict[str, Any]], key: str = "macs_share") -> None:
    """``front``: on the Pareto front of all settings; ``mode_front``: on its own family's front (its mode's,
    INT8 static subnets apart, ``setting.FAMILIES``).  Both chosen on the search half, by ``key`` (MACs or
    predicted latency share)."""
    def front(idx: list[int]) -> set[int]:
        return {idx[i] for i in pareto_front([rows[j]["search"][key] for j in idx],
                                             [rows[j]["search"]["metric"] for j in idx])}

    overall = front(list(range(len(rows))))
    per_mode: set[int] = set()
    for family in FAMILIES:
        per_mode |= front([i for i, r in enumerate(rows) if family_of(r) == family])
    for i, row in enumerate(rows):
        row["front"], row["mode_front"] = i in overall, i in per_mode


def finish_search(args: RunArgs, task: TaskSpec, rows: list[dict[str, Any]], sizes: dict[str, int],
                  split: str, seconds: float, oracle: Optional[dict[str, Any]] = None) -> StageReport:
    """search_results.json, inference_config.json (the best setting under --macs_budget, or --latency_budget
    with --cost latency), pareto.png and VisualDL scalars in --output_dir; the report the CLI prints.
    ``oracle``: perfect gates' row (:func:`perfect_gates`), reported beside the settings, never chosen."""
    key, budget = cost_key(args)
    rank = "latency_share" if key == "latency_ms" else key
    mark_fronts(rows, rank)
    best = best_under_budget([r["search"][key] for r in rows], [r["search"]["metric"] for r in rows], budget)
    flag = "--macs_budget" if key == "macs_share" else "--latency_budget"
    under = {"macs_share": f"{budget:.0%} of the full model's MACs", "latency_share": f"{budget:.0%} of the full "
             "model's predicted latency", "latency_ms": f"{budget:g} ms per input (predicted)"}[key]
    summary = {"task": task.name, "split": split, "parts": sizes, "seed": args.seed, "metric": task.primary_metric,
               "macs_budget": args.macs_budget, "cost": args.cost, "cost_table": args.cost_table,
               "latency_batch_size": args.latency_batch_size if args.cost_table else None,
               "latency_budget": args.latency_budget if args.cost == "latency" else None, "best": best,
               "seconds": round(seconds, 1), "oracle": oracle, "points": rows}
    write_search_results(args.output_dir, summary, None if best is None else {task.name: entry_of(rows[best])})
    plots.pareto(rows, best, os.path.join(args.output_dir, PARETO_PLOT),
                 f"{task.name}: held-out half of {split} ({sizes['held_out']} inputs)", task.primary_metric,
                 oracle=oracle, key=rank)
    if oracle is not None:
        logger.info(f"search {task.name}: perfect gates ({oracle['gate_target']} targets over widths "
                    f"{','.join(f'{w:g}' for w in oracle['width_mult_list'])}): held-out {task.primary_metric} "
                    f"{oracle['held_out']['metric']:.4f} at {oracle['held_out']['macs_share']:.0%} of the MACs")
    log_fronts(args.output_dir, rows, rank)
    if best is None:
        cheapest = min(r["search"][key] for r in rows)
        logger.warning(f"search {task.name}: no setting fits {flag} {budget:g} (the cheapest costs "
                       f"{cheapest:.3g}{' ms' if key == 'latency_ms' else ' of the full model'}); "
                       "no inference_config.json written")
    else:
        chosen = rows[best]
        held = chosen["held_out"]
        latency = f", {held['latency_ms']:.2f} ms per input" if "latency_ms" in held else ""
        logger.info(f"search {task.name}: best under {under}: {Plan.from_entry(chosen).describe()}: held-out "
                    f"{task.primary_metric} {held['metric']:.4f} at {held['macs_share']:.0%} of the MACs{latency}; "
                    f"{os.path.join(args.output_dir, 'inference_config.json')}")
    write_run_info(args, task.name, {"complete": True, "best": entry_of(rows[best]) if best is not None else None})
    gated = None
    if best is not None:
        gated = {"metrics": rows[best]["held_out"]["metrics"], "macs_share": rows[best]["held_out"]["macs_share"],
                 "label": rows[best]["mode"], "depth": rows[best]["depth_mult"]}
    return StageReport("search", task.name, args.output_dir, task.primary_metric, seconds=seconds, gated=gated,
                       front=[r for r in rows if r["front"]])


def log_fronts(output_dir: str, rows: list[dict[str, Any]], key: str = "macs_share") -> None:
    """VisualDL ``search/<mode>``: each mode's front (held-out metric), step = the cost share (``key``: MACs
    or predicted latency) in per mille."""
    from visualdl import LogWriter

    with LogWriter(logdir=os.path.join(output_dir, "vdl", "search")) as writer:
        for family in FAMILIES:
            points = sorted((r["held_out"][key], r["held_out"]["metric"]) for r in rows
                            if family_of(r) == family and r["mode_front"])
            tag = f"search/{family[0]}" + (f"_{family[1]}" if family[1] else "")
            for share, metric in points:
                writer.add_scalar(tag=tag, step=int(round(share * 1000)), value=metric)
