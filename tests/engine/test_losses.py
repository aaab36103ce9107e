"""Task losses against closed-form numpy values."""
import numpy as np
import paddle

from ofa_flexbert.glue.data import get_task
from ofa_flexbert.engine.losses import task_loss


def test_classification_loss_is_mean_cross_entropy():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], "float32")
    labels = np.array([0, 2])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(logp[0, 0] + logp[1, 2]) / 2
    got = task_loss(get_task("mnli"), paddle.to_tensor(logits), paddle.to_tensor(labels))
    assert abs(float(got) - expected) < 1e-6


def test_regression_loss_is_mean_squared_error_on_the_score():
    logits = np.array([[1.0], [3.5], [0.0]], "float32")
    labels = np.array([1.5, 3.0, 0.0], "float32")
    got = task_loss(get_task("sts-b"), paddle.to_tensor(logits), paddle.to_tensor(labels))
    assert abs(float(got) - np.mean((logits[:, 0] - labels) ** 2)) < 1e-6
