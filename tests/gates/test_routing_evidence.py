"""gate.diagnostics and the target rules: copying gates, perfect gates, random routes, 'agree' targets."""
import numpy as np
import pytest

from gate.diagnostics import agreement_with_previous, at_class, permuted_routes
from gate.targets import good_enough, smallest_enough
from ofa_flexbert.glue.tasks import get_task


def test_gates_that_copy_each_other_agree_fully_and_independent_ones_do_not():
    first = np.array([0, 1, 2, 3, 1, 0])
    copying = np.stack([first, first, first])
    assert agreement_with_previous(copying) == [None, 1.0, 1.0]
    other = np.array([1, 1, 0, 3, 2, 2])  # agrees with `first` on inputs 1 and 3
    assert agreement_with_previous(np.stack([first, other])) == [None, pytest.approx(2 / 6)]


def test_agreement_skips_inputs_that_left_before_a_gate():
    decisions = np.array([[0, 1, 2, 3],
                          [0, -1, 2, 1],   # input 1 left before gate 1
                          [-1, -1, -1, -1]])  # no input reached gate 2
    assert agreement_with_previous(decisions) == [None, pytest.approx(2 / 3), None]


def test_perfect_gates_take_each_input_from_its_target_class():
    per_class = np.arange(4 * 5 * 2).reshape(4, 5, 2)  # [K, N, C]
    targets = np.array([3, 0, 1, 1, 2])
    picked = at_class(per_class, targets)
    assert picked.tolist() == [per_class[t, n].tolist() for n, t in enumerate(targets)]


def test_random_routes_keep_every_route_and_so_the_width_mix_exactly():
    rng = np.random.default_rng(7)
    decisions = rng.integers(0, 4, size=(6, 200))
    dealt = permuted_routes(decisions, seed=1)
    assert sorted(map(tuple, dealt.T)) == sorted(map(tuple, decisions.T))  # the same routes, as a multiset
    for g in range(6):  # hence each gate's mix of widths, exactly
        assert np.bincount(dealt[g], minlength=4).tolist() == np.bincount(decisions[g], minlength=4).tolist()
    assert (dealt != decisions).any()  # but not to the same inputs
    np.testing.assert_array_equal(dealt, permuted_routes(decisions, seed=1))  # seeded
    assert (permuted_routes(decisions, seed=2) != dealt).any()


def test_agree_targets_follow_the_widest_width_not_the_label():
    task = get_task("sst-2")
    labels = np.array([1, 1, 0])
    # three widths' logits for three inputs; the widest predicts 0, 1, 1
    logits = [np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),   # predicts 1, 0, 1
              np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),   # predicts 0, 1, 0
              np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])]   # the widest: 0, 1, 1
    # input 0: wrong at the widest; `correct` sends it to the narrowest (right there by luck),
    # `agree` to the first width that agrees with the widest
    assert smallest_enough(good_enough(task, logits, labels, 0.0, "correct")).tolist() == [0, 1, 1]
    assert smallest_enough(good_enough(task, logits, labels, 0.0, "agree")).tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="^--gate_target: expected correct or agree, got 'best'$"):
        good_enough(task, logits, labels, 0.0, "best")


def test_agree_targets_of_a_regression_task_use_the_tolerance():
    task = get_task("sts-b")
    logits = [np.array([[1.0], [3.0]]), np.array([[2.4], [3.1]]), np.array([[2.0], [5.0]])]
    assert good_enough(task, logits, np.array([0.0, 0.0]), 0.5, "agree").tolist() == [
        [False, False], [True, False], [True, True]]


def evidence(gated_acc, random_acc):
    gates = [{"accuracy": 0.5, "accuracy_at_target_width": 0.8, "majority_rate": 0.7, "single_class": False,
              "agreement_with_previous": a} for a in (None, 0.99, 1.0)]
    row = lambda acc, share: {"metrics": {"acc": acc}, "macs_share": share}  # noqa: E731
    return gates, row(gated_acc, 0.41), {**row(random_acc, 0.41), "seeds": [0, 1, 2]}, row(0.95, 0.3)


def test_a_gated_model_no_better_than_its_random_routes_is_called_out_in_one_line(caplog):
    from ofa_flexbert.app.stages.gate import say_if_not_routing
    from ofa_flexbert.app.stages.gate_evidence import evaluation_line

    task = get_task("sst-2")
    gates, gated, random, oracle = evidence(0.80, 0.81)
    line = evaluation_line(task, 0.5, gates, gated, random, oracle)
    assert "same choice as the previous gate - 0.99 1.00" in line
    assert "gated acc=0.8000 at 41% of the full model's MACs, random routes 0.8100, perfect gates 0.9500 at 30%" in line
    assert line.endswith("; NOT ROUTING BY INPUT: no better than its routes dealt out at random")
    with caplog.at_level("WARNING", logger="ofa_flexbert"):
        say_if_not_routing(task, gated, random)
    assert [r.getMessage() for r in caplog.records] == [
        "gate sst-2: the gated model (acc 0.8000) is no better than its routes dealt out at random (0.8100, mean of "
        "3 deals): its gates do not route by input; a static subnet of its cost is as good"]
    gates, gated, random, oracle = evidence(0.82, 0.81)
    assert "NOT ROUTING" not in evaluation_line(task, 0.5, gates, gated, random, oracle)
    caplog.clear()
    say_if_not_routing(task, gated, random)
    assert not caplog.records


def test_the_results_table_shows_the_gated_model_beside_what_it_is_judged_against():
    from ofa_flexbert.app.report import StageReport, results_table

    _, gated, random, oracle = evidence(0.82, 0.81)
    report = StageReport("gate", "sst-2", "out", "acc", gated=gated,
                         baselines=[{**random, "label": "random routes"}, {**oracle, "label": "perfect gates"}])
    lines = results_table([report]).splitlines()
    assert [line.split()[2:4] for line in lines[2:]] == [["gated", "1"], ["random", "routes"], ["perfect", "gates"]]
