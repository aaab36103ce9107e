"""Training losses of every stage, in one module.

Finetune and final fine-tuning use the task loss on labels; the width and depth stages
add distillation terms here (soft cross-entropy on logits, MSE on hidden states).  The width
stage's hidden-state term pairs student layer i with teacher layer i, which PaddleSlim's
DistillConfig does by name; the depth stage pairs layers across depths
(:func:`teacher_layer_map`), which DistillConfig cannot, so it is :func:`hidden_distillation`.
"""
from __future__ import annotations

import math
from typing import Sequence

import paddle
import paddle.nn.functional as F

from .routes import exact_multiplier
from ofa_flexbert.glue.tasks import TaskSpec


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


def teacher_layer_map(student_layers: int, teacher_layers: int, depth_mult: float) -> list[int]:
    """For each student hidden state j = 0..n (0 = embeddings), the teacher hidden state it learns from.

    DynaBERT's rule, which the reference keeps (docs/reference.md, Depth stage): j -> floor(j/d)
    for j < n, and the last student layer -> the last teacher layer.  With 12 layers, d = 0.5
    gives [0, 2, 4, 6, 8, 10, 12] and d = 0.75 gives [0, 1, 2, 4, 5, 6, 8, 9, 10, 12].
    ``student_layers`` is n, the layers the depth-d subnet runs (routes.depth_for).
    """
    d = exact_multiplier(depth_mult)
    return [min(teacher_layers, math.floor(j / d)) for j in range(student_layers)] + [teacher_layers]


def hidden_distillation(student_hidden: Sequence[paddle.Tensor], teacher_hidden: Sequence[paddle.Tensor],
                        teacher_indices: Sequence[int]) -> paddle.Tensor:
    """Σ_j MSE(student_hidden[j], teacher_hidden[teacher_indices[j]]), embeddings included.

    Each term is the mean over all positions and features, as DistillConfig's MSE is, so at
    full depth this equals the width stage's hidden loss.
    """
    if len(student_hidden) != len(teacher_indices):
        raise ValueError(f"{len(student_hidden)} student hidden states but {len(teacher_indices)} teacher indices")
    terms = [F.mse_loss(s, teacher_hidden[t].detach()) for s, t in zip(student_hidden, teacher_indices)]
    return paddle.add_n(terms)
