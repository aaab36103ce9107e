"""Evaluating subnets on dev: metrics, MACs, the selection score -- what training and the stages share.

Why apart from the training loop: the loop evaluates every ``--logging_steps``, and the final
stage scores its input before training; inference-side code reads the same metrics without
needing an optimizer or a loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol

import numpy as np
import paddle

from ofa_flexbert.train import distributed
from ofa_flexbert.engine.accounting import lengths_of, mean_macs
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.store.outputs import SubnetResult
from ofa_flexbert.engine.routes import Subnet, subnet_tag
from ofa_flexbert.glue.tasks import TaskSpec


class Evaluable(Protocol):
    """What evaluation needs of a stage's strategy (``loop.Strategy`` is one)."""

    model: paddle.nn.Layer
    subnets: list[Subnet]

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        """Eval-mode logits of ``subnet`` on ``batch``."""


@dataclass
class Evaluation:
    """One evaluation: results per subnet, the selection score (higher is better), a log line,
    VisualDL scalars and anything more for eval_results.json."""

    results: list[SubnetResult]
    score: float
    summary: str
    scalars: dict[str, float]
    extra: Optional[dict] = None


def evaluate(strategy: Evaluable, task: TaskSpec, dev_loaders: dict[str, Iterable]) -> list[SubnetResult]:
    """Dev metrics and analytic MACs of every subnet.  Extra dev splits (MNLI mismatched) get a key prefix."""
    strategy.model.eval()
    config, lengths = strategy.model.bert.config, lengths_of(dev_loaders.values())
    results = []
    with paddle.no_grad():
        for subnet in strategy.subnets:
            metrics: dict[str, float] = {}
            classes: set[int] = set()
            for index, (split, loader) in enumerate(dev_loaders.items()):
                logits, labels = dev_logits(strategy, subnet, loader)
                values = compute_metrics(task, logits, labels)
                prefix = "" if index == 0 else f"{split}_"
                metrics.update({prefix + k: v for k, v in values.items()})
                if not task.is_regression:
                    classes.update(np.unique(predictions(task, logits)).tolist())
            macs = mean_macs(config, subnet.width_mult, subnet.depth_mult, lengths)
            single = None if task.is_regression else len(classes) == 1
            results.append(SubnetResult(subnet.width_mult, subnet.depth_mult, metrics, macs, single))
    return results


def dev_logits(strategy: Evaluable, subnet: Subnet, loader) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every example of ``loader`` (a ``data.make_loader``) for ``subnet``, in order.

    Under data parallel each rank collates and runs only its share of the batches (taken from
    the batch sampler) and the shares are gathered, so the dev set is evaluated once in total
    rather than once per rank.
    """
    parts = [(index, (strategy.logits(subnet, batch).numpy(), batch["labels"].numpy()))
             for index, batch in distributed.shard_batches(loader)]
    batches = distributed.gather(parts)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def score(results: list[SubnetResult], metric: str) -> float:
    """Model selection score: the sum of the primary metric over subnets (the reference's rule)."""
    return float(sum(r.metrics[metric] for r in results))


def format_results(results: list[SubnetResult], metric: str) -> str:
    """``w<w>/d<d> metric=value`` per subnet; a subnet predicting one class gets ``(one class)``."""
    return "  ".join(f"w{r.width_mult:g}/d{r.depth_mult:g} {metric}={r.metrics[metric]:.4f}"
                     f"{' (one class)' if r.single_class else ''}" for r in results)


def default_evaluation(strategy: Evaluable, task: TaskSpec, dev_loaders: dict[str, Iterable]) -> Evaluation:
    """Every subnet's dev metrics; the score is the sum of the primary metric (the reference's rule)."""
    results = evaluate(strategy, task, dev_loaders)
    scalars = {f"eval/{subnet_tag(r.width_mult, r.depth_mult)}/{key}": value
               for r in results for key, value in r.metrics.items()}
    return Evaluation(results, score(results, task.primary_metric), format_results(results, task.primary_metric),
                      scalars)
