"""Console tables of stage results (what people compare: metric per subnet, time)."""
from __future__ import annotations

from .stages.common import StageReport


def results_table(reports: list[StageReport]) -> str:
    """One row per (stage, subnet): task, primary metric and the other metrics, best step, time."""
    header = ("stage", "task", "width", "depth", "metric", "value", "other metrics", "best step", "time (s)")
    rows = []
    for report in reports:
        for result in report.results:
            others = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k != report.metric)
            rows.append((report.stage, report.task, f"{result.width_mult:g}", f"{result.depth_mult:g}", report.metric,
                         f"{result.metrics[report.metric]:.4f}", others or "-", str(report.best_step),
                         f"{report.seconds:.1f}"))
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line("-" * w for w in widths), *map(line, rows)])
