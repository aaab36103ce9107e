"""Training losses of every stage, in one module.

Finetune and final fine-tuning use the task loss on labels; the width and depth stages
add distillation terms here (soft cross-entropy on logits, MSE on hidden states).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from .data import TaskSpec


def task_loss(task: TaskSpec, logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Cross-entropy on class labels, or MSE on the score for regression (STS-B)."""
    if task.is_regression:
        return F.mse_loss(logits.reshape([-1]), labels.astype(logits.dtype).reshape([-1]))
    return F.cross_entropy(logits, labels.reshape([-1]))


def soft_cross_entropy(student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
    """mean over the batch of -Σ_c softmax(teacher)_c · log_softmax(student)_c (temperature 1)."""
    return -(F.softmax(teacher.detach(), axis=-1) * F.log_softmax(student, axis=-1)).sum(axis=-1).mean()


def logit_distillation(task: TaskSpec, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
    """Soft cross-entropy on logits; MSE for regression, as the reference does."""
    if task.is_regression:
        return F.mse_loss(student, teacher.detach())
    return soft_cross_entropy(student, teacher)
