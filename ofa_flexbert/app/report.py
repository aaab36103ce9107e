"""What a stage reports when it finishes (:class:`StageReport`) and the console tables of those reports
(what people compare: metric per subnet, cost, time)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.store.outputs import SubnetResult, write_run_info
from ofa_flexbert.train import distributed


@dataclass
class StageReport:
    """What a stage tells the CLI (and the demo) when it finishes; :meth:`tables` are what it prints.

    Each stage fills the fields it has: a training stage its subnets' results; the gate, infer and
    search stages the routed model's row (``gated``: metrics, MACs share, label, depth) and the gate
    stage the rows it is judged against (``baselines``: random routes, perfect gates); search its
    front; export its subnets; the demo the sentences its predictor labelled.
    """

    stage: str
    task: str
    output_dir: str
    metric: str
    results: list[SubnetResult] = field(default_factory=list)
    best_step: Optional[int] = None
    seconds: float = 0.0
    gated: Optional[dict[str, Any]] = None
    baselines: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[str, str, float]] = field(default_factory=list)

    def tables(self) -> list[str]:
        """This report's own tables, beside the results table all reports share."""
        tables = [grid_table(self)] if len({r.depth_mult for r in self.results}) > 1 else []
        if self.front:
            tables.append(front_table(self))
        if self.exports:
            tables.append(export_table(self))
        if self.samples:
            tables.append(samples_table(self))
        return tables


def finish(args: RunArgs, task: TaskSpec, data, result, info: Optional[dict[str, Any]] = None,
           gated: Optional[dict[str, Any]] = None) -> StageReport:
    """What every training stage does last: record flexbert.json (rank 0; ``info``: the stage's own keys),
    wait for every rank, report to the CLI."""
    info = {"complete": True, "best_step": result.best_step, "train_examples": data.num_train_examples,
            "steps": result.steps, "seconds": round(result.seconds, 1), "world_size": distributed.world_size(),
            "global_train_batch_size": args.per_gpu_train_batch_size * distributed.world_size(), **(info or {})}
    if distributed.is_main():
        write_run_info(args, task.name, info)
    distributed.barrier()  # a following stage (--stage all) reads what rank 0 wrote
    return StageReport(args.stage, task.name, args.output_dir, task.primary_metric, result.best_results,
                       result.best_step, result.seconds, gated=gated)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line("-" * w for w in widths), *map(line, rows)])


def _full_macs(report: StageReport) -> float | None:
    """MACs of the full model (width 1, depth 1) if it was evaluated, else of the largest subnet."""
    costs = [r.macs for r in report.results if r.macs]
    return max(costs) if costs else None


def results_table(reports: list[StageReport]) -> str:
    """One row per (stage, subnet): task, primary metric, share of the full model's MACs, other metrics."""
    header = ("stage", "task", "width", "depth", "metric", "value", "MACs", "other metrics", "best step", "time (s)")
    rows = []
    for report in reports:
        full = _full_macs(report)
        step = "-" if report.best_step is None else str(report.best_step)
        for result in report.results:
            others = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k != report.metric)
            share = f"{result.macs / full:.0%}" if full and result.macs else "-"
            if result.single_class:
                others = "ONE CLASS for every example; " + others
            rows.append((report.stage, report.task, f"{result.width_mult:g}", f"{result.depth_mult:g}", report.metric,
                         f"{result.metrics[report.metric]:.4f}", share, others or "-", step,
                         f"{report.seconds:.1f}"))
        for routed in ([report.gated] if report.gated else []) + report.baselines:
            # the model whose gates pick each input's widths, then what the gate stage judges it against
            share = f"{routed['macs_share']:.0%}"
            others = ", ".join(f"{k}={v:.4f}" for k, v in routed["metrics"].items() if k != report.metric)
            rows.append((report.stage, report.task, routed.get("label", "gated"), f"{routed.get('depth', 1):g}",
                         report.metric, f"{routed['metrics'][report.metric]:.4f}", share, others or "-", step,
                         f"{report.seconds:.1f}"))
    return _table(header, rows) if rows else ""


def grid_table(report: StageReport) -> str:
    """The width x depth grid of one stage: rows are depths, columns widths; each cell is
    ``metric (share of the full model's MACs)``, flagged ``one class!`` when the subnet
    predicted a single class for every dev example (a failure, not a trade-off point)."""
    widths = sorted({r.width_mult for r in report.results}, reverse=True)
    depths = sorted({r.depth_mult for r in report.results}, reverse=True)
    cells = {(r.width_mult, r.depth_mult): r for r in report.results}
    full = _full_macs(report)
    rows = []
    for d in depths:
        row = [f"depth {d:g}"]
        for w in widths:
            r = cells.get((w, d))
            if r is None:
                row.append("-")
                continue
            share = f" ({r.macs / full:.0%})" if full and r.macs else ""
            row.append(f"{r.metrics[report.metric]:.4f}{share}{' one class!' if r.single_class else ''}")
        rows.append(row)
    title = f"{report.stage} {report.task}: dev {report.metric} (MACs vs the full model) per width x depth"
    return title + "\n" + _table([""] + [f"width {w:g}" for w in widths], rows)


def front_table(report: StageReport) -> str:
    """The search stage's Pareto front (chosen on the search half), cheapest first: each setting's
    held-out metric and MACs share, and its whole-dev metric (what ``--stage infer`` reports)."""
    rows = []
    timed = all("latency_ms" in r["held_out"] for r in report.front)
    for r in sorted(report.front, key=lambda r: r["search"]["latency_share" if timed else "macs_share"]):
        threshold = f"{r['exit_threshold']:g}" if r.get("early_exit") else "-"
        latency = (f"{r['held_out']['latency_ms']:.2f}", f"{r['held_out']['latency_share']:.0%}") if timed else ()
        widths = ",".join(f"{w:g}" for w in r["width_mult_list"]) + (
            f" g={r['gate_threshold']:g}" if r.get("gate_threshold") is not None else "")
        rows.append((r["mode"] + (f" {r['quantize']}" if r.get("quantize") else ""), widths, f"{r['depth_mult']:g}", threshold,
                     f"{r['held_out']['metric']:.4f}", f"{r['held_out']['macs_share']:.0%}", *latency,
                     f"{r['held_out']['mean_layers']:.2f}", f"{r['dev']['metric']:.4f}"))
    title = (f"search {report.task}: Pareto front chosen on the search half of dev; {report.metric} and MACs "
             "(share of the full model) on the held-out half" + ("; ms: predicted per input, latency: its share "
                                                                 "of the full model's" if timed else ""))
    header = ("mode", "widths", "depth", "threshold", "held-out", "MACs", *(("ms", "latency") if timed else ()),
              "layers", "dev")
    return title + "\n" + _table(header, rows)


def export_table(report: StageReport) -> str:
    """The export stage's subnets: size and cost against the full model, dev metric of the exported graph,
    and its largest logit difference from the flexible model on each runtime (the check)."""
    exports = report.exports
    onnx = any(r.get("onnx_max_abs_logit_diff") is not None for r in exports)
    def diff(value) -> str:
        return "-" if value is None else f"{value:.1e}"

    rows = [(r["tag"], f"{r['parameters']:,}", f"{r['parameter_share']:.0%}", f"{r['macs_share']:.0%}",
             f"{r['value']:.4f}", diff(r["max_abs_logit_diff"]), diff(r["onednn_max_abs_logit_diff"]))
            + ((diff(r["onnx_max_abs_logit_diff"]),) if onnx else ()) + (r["path"],) for r in exports]
    title = (f"export {report.task}: parameters and MACs (at --max_seq_length) vs the full model; dev {report.metric} "
             "of the exported graph (Paddle Inference, oneDNN; an _int8 subnet: onnxruntime); max |Δlogits| against "
             "the flexible model per runtime")
    header = ("subnet", "parameters", "share", "MACs", report.metric, "Δ reference", "Δ oneDNN") + \
        (("Δ ONNX",) if onnx else ()) + ("path",)
    return title + "\n" + _table(header, rows)


def samples_table(report: StageReport) -> str:
    """Raw sentences and what the exported model's Predictor says of them (the demo's last step)."""
    rows = [(text, label, f"{p:.3f}") for text, label, p in report.samples]
    return f"predictor on {report.exports[0]['path']}\n" + _table(("input", "label", "probability"), rows)
