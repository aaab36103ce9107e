"""GLUE metrics (ofa_flexbert.metrics) against values worked out by hand."""
import json
import math

import numpy as np
import pytest

from ofa_flexbert.glue.data import TASKS, get_task
from ofa_flexbert.glue.metrics import compute_metrics, predictions


def one_hot(preds, num_labels=2):
    """Logits whose argmax is ``preds`` (with noise, so argmax really has to be taken)."""
    preds = np.asarray(preds)
    rng = np.random.RandomState(0)
    logits = rng.uniform(-1, 0, size=(len(preds), num_labels))
    logits[np.arange(len(preds)), preds] = 1 + rng.uniform(0, 1, size=len(preds))
    return logits.astype(np.float32)


def confusion(tp, tn, fp, fn):
    """(labels, predictions) with the given binary confusion matrix, in a shuffled order."""
    labels = [1] * tp + [0] * tn + [0] * fp + [1] * fn
    preds = [1] * tp + [0] * tn + [1] * fp + [0] * fn
    order = np.random.RandomState(1).permutation(len(labels))
    return np.array(labels)[order], np.array(preds)[order]


def test_keys_follow_task_spec():
    for task in TASKS.values():
        n = 6
        logits = np.random.RandomState(0).randn(n, task.num_labels)
        labels = (np.random.RandomState(1).rand(n) * 5 if task.is_regression
                  else np.arange(n) % task.num_labels)
        result = compute_metrics(task, logits, labels)
        assert tuple(result) == task.metrics
        assert all(type(v) is float for v in result.values())


def test_mcc_closed_form():
    tp, tn, fp, fn = 5, 4, 2, 3
    labels, preds = confusion(tp, tn, fp, fn)
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = compute_metrics(get_task("cola"), one_hot(preds), labels)
    assert result == {"mcc": pytest.approx(expected, abs=1e-12)}
    assert 0 < expected < 1


def test_mcc_constant_prediction_is_zero():
    labels = np.array([0, 1, 1, 0])
    assert compute_metrics(get_task("cola"), one_hot([1, 1, 1, 1]), labels) == {"mcc": 0.0}


@pytest.mark.parametrize("name", ["mrpc", "qqp"])
def test_acc_f1_from_confusion_matrix(name):
    tp, tn, fp, fn = 6, 3, 2, 4
    labels, preds = confusion(tp, tn, fp, fn)
    acc = (tp + tn) / (tp + tn + fp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn)
    result = compute_metrics(get_task(name), one_hot(preds), labels)
    assert list(result) == ["acc", "f1", "acc_and_f1"]
    assert result["acc"] == pytest.approx(acc, abs=1e-12)
    assert result["f1"] == pytest.approx(f1, abs=1e-12)
    assert result["acc_and_f1"] == pytest.approx((acc + f1) / 2, abs=1e-12)


def test_f1_without_positives_is_zero_not_nan():
    result = compute_metrics(get_task("mrpc"), one_hot([0, 0, 0]), np.array([0, 0, 0]))
    assert result == {"acc": 1.0, "f1": 0.0, "acc_and_f1": 0.5}


@pytest.mark.parametrize("name", ["sst-2", "qnli", "rte", "wnli", "mnli"])
def test_accuracy(name):
    task = get_task(name)
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1]) % task.num_labels
    preds = labels.copy()
    preds[[1, 4, 6]] = (preds[[1, 4, 6]] + 1) % task.num_labels  # 3 of 8 wrong
    assert compute_metrics(task, one_hot(preds, task.num_labels), labels) == {"acc": 5 / 8}


def test_mnli_three_way_argmax():
    logits = np.array([[0.1, 0.2, 3.0], [2.0, -1.0, 0.0], [0.0, 5.0, 4.9]])
    np.testing.assert_array_equal(predictions(get_task("mnli"), logits), [2, 0, 1])
    assert compute_metrics(get_task("mnli"), logits, np.array([2, 1, 1])) == {"acc": 2 / 3}


def test_stsb_pearson_spearman_by_hand():
    preds = np.array([0.5, 2.0, 1.0, 4.5, 3.0, 2.5])
    labels = np.array([1.0, 1.5, 0.5, 5.0, 4.0, 2.0])
    x, y = preds - preds.mean(), labels - labels.mean()
    pearson = (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())
    # no ties: Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)) on the ranks
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    d = rank(preds) - rank(labels)
    n = len(preds)
    spearman = 1 - 6 * (d * d).sum() / (n * (n * n - 1))
    result = compute_metrics(get_task("sts-b"), preds.reshape(-1, 1), labels)
    assert list(result) == ["pearson", "spearman", "corr"]
    assert result["pearson"] == pytest.approx(pearson, abs=1e-12)
    assert result["spearman"] == pytest.approx(spearman, abs=1e-12)
    assert result["corr"] == pytest.approx((pearson + spearman) / 2, abs=1e-12)
    assert spearman != pytest.approx(pearson)  # the two really are different statistics


def test_stsb_constant_predictions_are_zero_and_strict_json():
    result = compute_metrics(get_task("sts-b"), np.full((5, 1), 2.5), np.arange(5.0))
    assert result == {"pearson": 0.0, "spearman": 0.0, "corr": 0.0}
    json.dumps(result, allow_nan=False)
    single = compute_metrics(get_task("sts-b"), np.array([1.0]), np.array([3.0]))
    assert single == {"pearson": 0.0, "spearman": 0.0, "corr": 0.0}


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"expected logits of shape \[N, 2\]"):
        compute_metrics(get_task("rte"), np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="3 predictions but 4 labels"):
        compute_metrics(get_task("rte"), np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics(get_task("rte"), np.zeros((0, 2)), np.zeros(0))
