"""Each input's gate target: the smallest width in --gate_setting whose uniform subnet gets it right.

Computed in eval mode without gradients.  The reference computes targets in train mode, so
dropout makes a sample's target change from one epoch to the next (flexible-bert-method.md
docs/reference.md, Gate targets); with the backbone frozen, eval-mode targets are a fixed property of each input.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import paddle

from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.engine.routes import Route

from .modules import FeatureRecorder
from .settings import GateSettings


def smallest_correct(correct: np.ndarray) -> np.ndarray:
    """[B] target classes from ``correct`` [K, B] (width k got row b right): the first k that is
    right, else the last class ("needs the widest")."""
    correct = np.asarray(correct, dtype=bool)
    classes = correct.shape[0]
    right = correct[:-1]
    return np.where(right.any(axis=0), right.argmax(axis=0), classes - 1)


def is_correct(task: TaskSpec, logits: np.ndarray, labels: np.ndarray, tolerance: float) -> np.ndarray:
    """Per row: the prediction is right (classification) or within ``tolerance`` of the label (regression)."""
    if task.is_regression:
        return np.abs(logits.reshape(-1) - labels.reshape(-1)) <= tolerance
    return logits.argmax(axis=-1) == labels.reshape(-1)


def width_passes(model, batch: dict, settings: GateSettings, task: TaskSpec,
                 tolerance: float = 0.0) -> tuple[np.ndarray, list[list[paddle.Tensor]], list[np.ndarray]]:
    """One eval-mode, no-gradient forward per width of --gate_setting, at full depth.

    Returns ``(targets [B], features, logits)`` where ``features[k][g]`` [B, H] is what gate g
    reads when every layer runs at ``gate_setting[k]`` -- the features the reference trains the
    gates on (docs/reference.md, Gate loss) -- and ``logits[k]`` that uniform subnet's logits.
    """
    was_training = model.training
    model.eval()
    correct, features, logits = [], [], []
    try:
        with paddle.no_grad():
            for width in settings.gate_setting:
                recorder = FeatureRecorder(settings.gate_steps())
                out = classify(model, batch["input_ids"], batch["token_type_ids"],
                               Route.uniform(model.bert.config, width), hook=recorder)
                logits.append(out.logits.numpy())
                correct.append(is_correct(task, logits[-1], batch["labels"].numpy(), tolerance))
                features.append(recorder.features)
    finally:
        if was_training:
            model.train()
    return smallest_correct(np.stack(correct)), features, logits


def distribution(targets: np.ndarray, classes: int) -> list[float]:
    """Share of each class among ``targets``."""
    counts = np.bincount(np.asarray(targets, dtype="int64"), minlength=classes)
    return (counts / max(1, counts.sum())).tolist()


def majority_rate(targets: np.ndarray, classes: Optional[int] = None) -> float:
    """Accuracy of always answering the most common target: the bar a gate must clear."""
    return max(distribution(targets, classes or int(np.max(targets)) + 1))


def balanced_accuracy(targets: np.ndarray, chosen: np.ndarray) -> float:
    """Mean per-class recall over the target classes that occur (scikit-learn's): 1/(classes present)
    for a gate that answers one class, whatever the class shares -- the bar that plain accuracy hides
    when one width is the target of most inputs."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(targets, chosen))
