"""Figures people compare (the search stage's trade-off plot; the benchmarks' figures), as PNG files.

matplotlib runs with its non-interactive Agg backend (no display here or on a server), and a
figure is written atomically like every other output.
"""
from __future__ import annotations

import io
from typing import Any, Optional, Sequence

from ofa_flexbert.adaptive.setting import FAMILIES, Mode, QUANTIZED, family_label, family_of
from ofa_flexbert.store.atomic import write_bytes

# how each family of settings is drawn on a trade-off plot, in legend order: (colour, marker, joined by a line)
FAMILY_STYLE = {(Mode.STATIC, None): ("0.45", "s", False), (Mode.D_DYNAMIC, None): ("tab:blue", "o", True),
                (Mode.W_DYNAMIC, None): ("tab:orange", "^", True), (Mode.WD_DYNAMIC, None): ("tab:green", "D", True),
                (Mode.CASCADE, None): ("tab:purple", "v", True), (Mode.STATIC, QUANTIZED): ("tab:brown", "P", False)}
assert set(FAMILY_STYLE) == set(FAMILIES)


def axes(xlabel: str, ylabel: str, title: str):
    """A fresh (figure, axes) pair from a non-interactive matplotlib backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig, ax


def save(fig, ax, path: str, legend_outside: bool = False) -> None:
    """Legend (inside where it covers least, or right of the axes), layout, then an atomic PNG write;
    the figure is closed (no leak across many plots)."""
    import matplotlib.pyplot as plt

    if legend_outside:
        fig.set_size_inches(fig.get_size_inches()[0] + 3.2, fig.get_size_inches()[1])
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


COST_AXES = {"macs_share": "MACs (share of the full model)",
             "latency_share": "predicted latency (share of the full model's)"}


def pareto(rows: Sequence[dict[str, Any]], best: Optional[int], path: str, title: str, metric: str,
           oracle: Optional[dict[str, Any]] = None, key: str = "macs_share") -> None:
    """The search stage's figure: held-out metric against the share of the full model's MACs (or of its
    predicted latency, ``key``, with --cost latency).

    Every static subnet is drawn (in its INT8 form too, when searched); of the dynamic modes, each mode's front (chosen on the search
    half, ``mode_front``), joined in order of cost.  The setting written as the inference config
    is starred; perfect gates (``oracle``), a ceiling rather than a setting, are a hollow marker.
    """
    fig, ax = axes(COST_AXES[key], f"{metric} (held-out half)", title)
    for family, (colour, marker, joined) in FAMILY_STYLE.items():
        points = sorted((r["held_out"][key], r["held_out"]["metric"]) for r in rows
                        if family_of(r) == family and (r["mode_front"] or family[0] is Mode.STATIC))
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=marker, color=colour, label=family_label(family),
                    linestyle="-" if joined else "none", markersize=4)
    if oracle is not None and key in oracle["held_out"]:
        ax.plot([oracle["held_out"][key]], [oracle["held_out"]["metric"]], marker="o", markersize=8,
                markerfacecolor="none", color="black", linestyle="none", label="perfect gates (ceiling)")
    if best is not None:
        chosen = rows[best]["held_out"]
        ax.plot([chosen[key]], [chosen["metric"]], marker="*", color="red", markersize=12, linestyle="none",
                label="chosen (inference_config.json)")
    save(fig, ax, path)
