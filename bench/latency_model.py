#!/usr/bin/env python
"""How well the latency model (--stage profile's cost table) predicts real exports, on dev inputs.

    python bench/latency_model.py --task sst-2 --cost_table PROF/cost_table.json \\
        --exports OUT/w1_d1,OUT/w0.5_d1,SEG/wd_dynamic --out RESULTS [--batch_sizes 1,32] [--rounds 5]

For each batch size, dev inputs are grouped by length as ``Predictor.run`` groups them and padded;
every export (static subnets, segment and cascade exports) runs all of them once per round, the exports
taking turns (the order rotating each round); a figure is the median over rounds of the milliseconds
per input spent in the runtime calls (tokenising excluded).  The prediction is the cost table's for
the same batches and, for a segment or cascade export, for the routes it took (``adaptive.latency``).  Writes
``RESULTS/latency_model.json`` and ``RESULTS/latency_model.md``: measured, predicted, and the error.
The table must have been profiled with the same --num_threads and --onednn as given here, and on the
runtime the exports run on (--runtime; an INT8 export runs on onnxruntime whatever it says: time INT8
exports against a table of ``--stage profile --quantize int8``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchlib import atomic_write

import patches  # noqa: F401,E402  -- zlib before paddle

from ofa_flexbert.adaptive.latency import (ChainShape, group_ids, per_input_ms, read_cost_table,  # noqa: E402
                                           segment_shape)
from ofa_flexbert.deploy.grouping import length_groups  # noqa: E402
from ofa_flexbert.deploy.predictor import Predictor  # noqa: E402
from ofa_flexbert.glue.data import get_task, read_split  # noqa: E402


def batches_of(predictor: Predictor, texts: list[str], pairs, batch_size: int):
    """(groups, padded batches, lengths): dev inputs as ``Predictor.run`` batches them."""
    rows = predictor.encode(texts, pairs)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    groups = length_groups(lengths.tolist(), batch_size)
    return groups, [predictor.pad([rows[i] for i in g]) for g in groups], lengths


def run_all(predictor: Predictor, batches: list) -> tuple[float, list]:
    """Seconds in the runtime calls for every batch, and the routes a segment export took (in batch order)."""
    routes, spent = [], 0.0
    for ids, types in batches:
        start = time.perf_counter()
        if predictor.dynamic is None:
            predictor.logits(ids, types)
        else:
            routes.extend(predictor.dynamic.run(ids, types)[1])
        spent += time.perf_counter() - start
    return spent, routes


def predicted_ms(table, predictor: Predictor, groups: list, lengths: np.ndarray, routes: list) -> float:
    """The cost table's milliseconds per input for this export on these batches (and routes)."""
    order = [i for g in groups for i in g]  # routes come in batch order
    gid = group_ids(groups, len(lengths))
    manifest = predictor.manifest
    if predictor.dynamic is None:
        shape = ChainShape(((int(manifest["heads"][0]), len(manifest["layers"])),), np.zeros(len(lengths), dtype="int64"))
        return per_input_ms(table, shape, gid, lengths)
    runner = predictor.dynamic
    by_input = [None] * len(lengths)
    for i, route in zip(order, routes):
        by_input[i] = route
    if manifest["kind"] == "cascade":  # each input's run lists the stages it ran
        stages = tuple((r.widths[0].heads, len(r.widths)) for r in runner.routes)
        shape = ChainShape(stages, np.array([len(run.routes) - 1 for run in by_input]))
    else:
        shape = segment_shape(runner.segments, by_input, np.array([len(r.executed) for r in by_input]),
                              runner.gates is not None, runner.ramp_layers is not None)
    return per_input_ms(table, shape, gid, lengths)


def held_out(points: list[dict], manifest: dict) -> float | None:
    """The held-out metric of the search row this export is (a static subnet, or its setting)."""
    for row in points:
        if manifest.get("kind") in ("cascade", "segments"):
            setting = manifest["setting"]
            keys = ("mode", "width_mult_list", "depth_mult", "cascade_depths", "cascade_thresholds", "exit_threshold")
            if all(row.get(k) == setting.get(k) for k in keys if k in setting):
                return row["held_out"]["metric"]
        elif row["mode"] == "static" and row["width_mult_list"] == [manifest["width_mult"]] \
                and row["depth_mult"] == manifest["depth_mult"]:
            return row["held_out"]["metric"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir")
    parser.add_argument("--cost_table", required=True)
    parser.add_argument("--exports", required=True, help="comma-separated export folders (static, segments, cascade)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--onednn", choices=("on", "off"), default="on")
    parser.add_argument("--runtime", choices=("paddle", "onnx"), default=None,
                        help="the float exports' runtime (default paddle; an INT8 export's is onnx)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N dev inputs (0: all)")
    parser.add_argument("--search", help="a search_results.json: each export's held-out metric there, beside it")
    args = parser.parse_args()
    table = read_cost_table(args.cost_table)
    onednn = args.onednn == "on" and table.meta.get("runtime") != "onnxruntime"
    if table.meta.get("num_threads") != args.num_threads or bool(table.meta.get("onednn")) != onednn:
        raise SystemExit(f"{args.cost_table} was profiled at {table.meta.get('num_threads')} thread(s), oneDNN "
                         f"{table.meta.get('onednn')}; time with the same settings")
    exports = args.exports.split(",")
    task = get_task(args.task)
    data_dir = args.data_dir or os.path.join(os.environ["GLUE_DIR"], task.dir_name)
    examples = read_split(task, data_dir, task.dev_splits[0])
    examples = examples[:args.limit] if args.limit else examples
    texts, pairs = [e.text_a for e in examples], ([e.text_b for e in examples] if examples[0].text_b else None)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        predictors = {e: Predictor(e, num_threads=args.num_threads, onednn=onednn, batch_size=batch_size,
                                   runtime=args.runtime) for e in exports}
        groups, batches, lengths = batches_of(predictors[exports[0]], texts, pairs, batch_size)
        routes = {e: run_all(p, batches)[1] for e, p in predictors.items()}  # warm-up, and the routes taken
        times: dict[str, list[float]] = {e: [] for e in exports}
        for r in range(args.rounds):
            for e in exports[r % len(exports):] + exports[:r % len(exports)]:
                times[e].append(run_all(predictors[e], batches)[0] * 1000.0 / len(lengths))
        for e in exports:
            measured = float(np.median(times[e]))
            predicted = predicted_ms(table, predictors[e], groups, lengths, routes[e])
            metric = held_out(json.load(open(args.search))["points"], predictors[e].manifest) if args.search else None
            results.append({"export": e, "batch_size": batch_size, "measured_ms": measured, "predicted_ms": predicted,
                            "error": predicted / measured - 1.0, "held_out": metric, "rounds": times[e]})
            print(f"batch {batch_size:3} {e}: measured {measured:.3f} ms, predicted {predicted:.3f} ms "
                  f"({predicted / measured - 1:+.0%})", flush=True)
    atomic_write(os.path.join(args.out, "latency_model.json"), json.dumps(
        {"task": args.task, "cost_table": os.path.abspath(args.cost_table), "meta": table.meta, "inputs": len(texts),
         "num_threads": args.num_threads, "onednn": onednn, "results": results}, indent=2) + "\n")
    lines = ["| export | batch | measured ms/input | predicted | error | held-out |", "|---|---|---|---|---|---|"]
    lines += [f"| {os.path.relpath(r['export'], os.path.dirname(os.path.dirname(r['export'])))} | {r['batch_size']} | "
              f"{r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | {r['error']:+.0%} | "
              f"{'-' if r['held_out'] is None else format(r['held_out'], '.4f')} |" for r in results]
    atomic_write(os.path.join(args.out, "latency_model.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
