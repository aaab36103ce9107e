"""Each input's gate target: the smallest width in --gate_setting whose uniform subnet is good enough.

Two rules (``--gate_target``): ``correct`` (the reference's) -- the smallest width that gets the
input right, else the widest; ``agree`` -- the smallest width whose prediction agrees with the
widest width's.  Why ``agree``: under ``correct`` an input that every width gets wrong is a
"needs the widest" example, though no width helps it, and an input that only a narrow width gets
right (by luck) asks for that width; a gate cannot learn either from the input.  Agreement with
the full model is a property of the input the gates can see, and perfect gates then keep the
full model's predictions exactly.

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


def smallest_enough(correct: np.ndarray) -> np.ndarray:
    """[B] target classes from ``correct`` [K, B] (width k is good enough for row b): the first k
    that is, else the last class ("needs the widest")."""
    correct = np.asarray(correct, dtype=bool)
    classes = correct.shape[0]
    right = correct[:-1]
    return np.where(right.any(axis=0), right.argmax(axis=0), classes - 1)


def is_correct(task: TaskSpec, logits: np.ndarray, labels: np.ndarray, tolerance: float) -> np.ndarray:
    """Per row: the prediction is right (classification) or within ``tolerance`` of the label (regression)."""
    if task.is_regression:
        return np.abs(logits.reshape(-1) - labels.reshape(-1)) <= tolerance
    return logits.argmax(axis=-1) == labels.reshape(-1)


def good_enough(task: TaskSpec, logits: list[np.ndarray], labels: np.ndarray, tolerance: float,
                rule: str) -> np.ndarray:
    """[K, B]: class k's uniform subnet is good enough for row b under ``rule`` (--gate_target):
    right (``correct``), or predicting what the widest width predicts (``agree``; regression: within
    ``tolerance`` of its score)."""
    if rule == "correct":
        return np.stack([is_correct(task, l, labels, tolerance) for l in logits])
    if rule == "agree":
        widest = logits[-1]
        reference = widest.reshape(-1) if task.is_regression else widest.argmax(axis=-1)
        return np.stack([is_correct(task, l, reference, tolerance) for l in logits])
    raise ValueError(f"--gate_target: expected correct or agree, got '{rule}'")


def width_passes(model, batch: dict, settings: GateSettings, task: TaskSpec, tolerance: float = 0.0,
                 rule: str = "correct") -> tuple[np.ndarray, list[list[paddle.Tensor]], list[np.ndarray]]:
    """One eval-mode, no-gradient forward per width of --gate_setting, at full depth.

    Returns ``(targets [B], features, logits)`` where ``targets`` follow ``rule``
    (:func:`good_enough`), ``features[k][g]`` [B, H] is what gate g reads when every layer runs
    at ``gate_setting[k]`` (the reference trains gate g on ``features[target][g]``, docs/reference.md,
    Gate loss) and ``logits[k]`` is that uniform subnet's logits.
    """
    was_training = model.training
    model.eval()
    features, logits = [], []
    try:
        with paddle.no_grad():
            for width in settings.gate_setting:
                recorder = FeatureRecorder(settings.gate_steps())
                out = classify(model, batch["input_ids"], batch["token_type_ids"],
                               Route.uniform(model.bert.config, width), hook=recorder)
                logits.append(out.logits.numpy())
                features.append(recorder.features)
    finally:
        if was_training:
            model.train()
    targets = smallest_enough(good_enough(task, logits, batch["labels"].numpy(), tolerance, rule))
    return targets, features, logits


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
