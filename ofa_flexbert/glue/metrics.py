"""GLUE dev metrics, computed by scikit-learn and SciPy (nothing hand-rolled).

Keys (``TaskSpec.metrics``, primary -- the one checkpoint selection uses -- first):

* CoLA: ``mcc`` (Matthews correlation)
* SST-2, MNLI, QNLI, RTE, WNLI: ``acc`` (MNLI matched / mismatched are separate dev splits)
* MRPC, QQP: ``acc``, ``f1`` (positive class 1), ``acc_and_f1`` (their mean); accuracy is
  primary, as in the Flexible-BERT reference
* STS-B: ``pearson``, ``spearman``, ``corr`` (their mean)

Results go into strict JSON, so every value is a finite python float: the correlations of a
constant prediction (or of fewer than two examples) are undefined, and are reported as 0.0 --
"no linear / rank relationship" -- instead of NaN.  scikit-learn already does the same for MCC,
and F1 with no positive predictions or labels is 0.0 (``zero_division=0.0``).
"""
from __future__ import annotations

import math
import warnings
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import TaskSpec  # the task table imports no paddle: metrics stay importable without it

__all__ = ["compute_metrics", "predictions"]


def predictions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Model outputs -> predictions: class indices (argmax over the last axis) for
    classification, a flat float vector of scores for regression."""
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(-1).astype(np.float64)
    if logits.ndim != 2 or logits.shape[-1] != task.num_labels:
        raise ValueError(f"{task.name}: expected logits of shape [N, {task.num_labels}], "
                         f"got {list(logits.shape)}")
    return np.argmax(logits, axis=-1)


def _correlation(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    """``fn`` (pearsonr / spearmanr) statistic, 0.0 where it is undefined (NaN)."""
    if len(preds) < 2:
        return 0.0
    with warnings.catch_warnings():
        # ConstantInputWarning (scipy) / RuntimeWarning: the NaN result is handled below.
        warnings.simplefilter("ignore")
        value = float(fn(preds, labels)[0])
    return value if math.isfinite(value) else 0.0


def compute_metrics(task: TaskSpec, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE metrics of ``logits`` ([N, num_labels], or [N] / [N, 1] for STS-B) against
    ``labels`` ([N] class indices, or float scores for STS-B).

    Returns python floats keyed by ``task.metrics``, in that order.  Pearson and Spearman of a
    constant prediction (or of a single example) are undefined; they are returned as 0.0 so that
    the result is valid strict JSON.
    """
    preds = predictions(task, logits)
    labels = np.asarray(labels).reshape(-1)
    if len(preds) != len(labels):
        raise ValueError(f"{task.name}: {len(preds)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{task.name}: no examples to compute metrics on")

    if task.is_regression:
        labels = labels.astype(np.float64)
        pearson = _correlation(pearsonr, preds, labels)
        spearman = _correlation(spearmanr, preds, labels)
        values = {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}
    else:
        labels = labels.astype(np.int64)
        acc = float(accuracy_score(labels, preds))
        values = {"acc": acc}
        if "mcc" in task.metrics:
            values["mcc"] = float(matthews_corrcoef(labels, preds))
        if "f1" in task.metrics:
            f1 = float(f1_score(labels, preds, pos_label=1, average="binary",
                                labels=[0, 1], zero_division=0.0))
            values["f1"] = f1
            values["acc_and_f1"] = (acc + f1) / 2
    return {key: float(values[key]) for key in task.metrics}
