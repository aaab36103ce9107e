"""Length-grouped batches: every input in exactly one batch, the cheapest cut of the sorted order under the
cost model (checked against brute force over every cut), and what the cost model says a cut saves."""
import itertools
import random

import pytest

from ofa_flexbert.deploy.grouping import length_groups


def padded_cost(groups, lengths, call_cost):
    """The cost model of ``length_groups`` for a given batching."""
    return sum(call_cost + len(g) * max(lengths[i] for i in g) for g in groups if g)


def cheapest_by_brute_force(lengths, max_rows, call_cost):
    """The minimum of the cost model over every way of cutting the sorted order into runs of <= max_rows."""
    ordered = sorted(lengths)
    n, best = len(ordered), float("inf")
    for cuts in itertools.product((False, True), repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        runs = [ordered[a:b] for a, b in zip(bounds, bounds[1:])]
        if all(len(r) <= max_rows for r in runs):
            best = min(best, sum(call_cost + len(r) * max(r) for r in runs))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_cut_is_the_cheapest_and_covers_every_input_once(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([3, 5, 8, 12, 20, 40, 60]) for _ in range(rng.randint(1, 11))]
    max_rows, call_cost = rng.choice([1, 3, 32]), rng.choice([0, 10, 40])
    groups = length_groups(lengths, max_rows, call_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(1 <= len(g) <= max_rows for g in groups)
    assert padded_cost(groups, lengths, call_cost) == cheapest_by_brute_force(lengths, max_rows, call_cost)


def test_a_long_input_gets_its_own_batch_when_padding_to_it_costs_more_than_a_call():
    lengths = [5, 100, 5, 5]
    assert length_groups(lengths, 32, call_cost=40) == [[0, 2, 3], [1]]  # 55 + 140 against 440 for one batch
    assert length_groups(lengths, 32, call_cost=400) == [[0, 2, 3, 1]]  # a call dearer than the padding


def test_equal_lengths_fill_batches_in_order():
    groups = length_groups([7] * 5, 2, call_cost=40)  # as few calls as the row limit allows, order kept
    assert len(groups) == 3 and [i for g in groups for i in g] == [0, 1, 2, 3, 4]
    assert length_groups([], 8) == []
    with pytest.raises(ValueError, match="max_rows must be >= 1, got 0"):
        length_groups([3], 0)
