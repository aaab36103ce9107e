"""adaptive.latency: the latency model's fit, its composition of graph calls, and the calls each
predictor's loop makes (pure: closed forms on hand-made tables and routes)."""
import json

import numpy as np
import pytest

from ofa_flexbert.adaptive.latency import (CALL, EMBEDDINGS, HEAD, Calls, ChainShape, CostTable, SegmentShape,
                                           check_table, group_ids, layer_probe, per_input_ms, read_cost_table)
from ofa_flexbert.errors import UserError


def grid(f) -> list[list[float]]:
    return [[b, t, f(b, t)] for b in (1, 4, 16) for t in (8, 32)]


def linear_table() -> CostTable:
    """call 0.1 ms; embeddings 0.3 + 0.001/token; head 0.15; a layer at 2 heads 0.5 + 0.01/token, at 4 heads
    0.6 + 0.02/token (all with the call's 0.1 inside) -- linear, so bilinear interpolation is exact."""
    return CostTable({CALL: grid(lambda b, t: 0.1), EMBEDDINGS: grid(lambda b, t: 0.3 + 0.001 * b * t),
                      HEAD: grid(lambda b, t: 0.15), layer_probe(2): grid(lambda b, t: 0.5 + 0.01 * b * t),
                      layer_probe(4): grid(lambda b, t: 0.6 + 0.02 * b * t)}, {"hidden_size": 32})


def calls(*rows, depth: int = 1):
    """Calls from (heads, layers, outputs, rows, span, embeddings, index) tuples, all at one ``depth``."""
    return Calls.join([Calls(*(np.array([v], dtype="bool" if k == 5 else "int64") for k, v in enumerate((*r, depth))))
                       for r in rows])


def deep_table() -> CostTable:
    """A width of 2 heads probed as the whole stack of 6 layers (4.1 ms: 4.0 beyond the call, 0.667 a layer)
    and as stacks of 3 (1.1 ms: 1/3 a layer) and 2 layers (0.9: 0.4 a layer -- more than at 3, as a cache can
    make it); a width of 4 heads only whole (6 layers, 6.1 ms: 1 a layer) -- at every shape, to read easily."""
    flat = lambda v: grid(lambda b, t: v)  # noqa: E731
    return CostTable({CALL: flat(0.1), EMBEDDINGS: flat(0.3), HEAD: flat(0.15), layer_probe(2): flat(4.1),
                      layer_probe(2, 3): flat(1.1), layer_probe(2, 2): flat(0.9), layer_probe(4): flat(6.1)},
                     {"probe_layers": {layer_probe(2): 6, layer_probe(2, 3): 3, layer_probe(2, 2): 2,
                                       layer_probe(4): 6}})


def test_a_probe_is_its_measured_time_on_the_grid_and_bilinear_between_and_beyond():
    table = CostTable({CALL: [[1, 8, 1.0], [1, 32, 2.0], [4, 8, 3.0], [4, 32, 8.0]]})
    assert table.ms(CALL, [1, 4, 4], [8, 8, 32]).tolist() == [1.0, 3.0, 8.0]
    # halfway in both: the mean of the four corners; past the grid: the edge's slope carried on
    assert table.ms(CALL, 2.5, 20).item() == pytest.approx((1 + 2 + 3 + 8) / 4)
    assert table.ms(CALL, 7, 8).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="^probe 'call' needs a full grid of at least 2 batch sizes x 2 lengths$"):
        CostTable({CALL: [[1, 8, 1.0], [1, 32, 2.0], [4, 8, 3.0]]})


def test_a_graph_costs_its_start_plus_each_part_s_time_beyond_a_call():
    table = linear_table()
    got = table.cost(calls(
        (4, 2, 1, 3, 10, False, 0),  # two layers at 4 heads and a gate, 3 rows x 10 tokens, from hidden states
        (2, 1, 1, 3, 10, True, 0),   # a static subnet: embeddings, a layer at 2 heads, the final head
        (0, 0, 1, 3, 10, True, -1)))  # a segment export's embeddings with gate 0 inside
    assert got.tolist() == pytest.approx([0.1 + 2 * (0.6 + 0.6 - 0.1) + 0.05, 0.33 + (0.5 + 0.3 - 0.1) + 0.05,
                                          0.33 + 0.05])
    restored = CostTable.from_json(json.loads(json.dumps(table.to_json())))
    assert restored.cost(calls((4, 2, 1, 3, 10, False, 0))).tolist() == got[:1].tolist()


@pytest.mark.parametrize("depth, per_layer", [(6, 4 / 6), (3, 1 / 3), (2, 0.4), (1, 0.4), (9, 4 / 6),
                                              (4, 1 / 3 + (4 / 6 - 1 / 3) / 3), (5, 1 / 3 + 2 * (4 / 6 - 1 / 3) / 3)])
def test_a_layer_costs_what_the_probes_at_the_depths_around_its_loop_s_depth_say(depth, per_layer):
    """A probed depth: its probe's per-layer marginal; between two: linear in depth; beyond: the nearest's."""
    table = deep_table()
    assert table.layer_marginal(2, depth, 1, 8).item() == pytest.approx(per_layer)
    got = table.cost(calls((2, 3, 1, 1, 8, True, 0), depth=depth))  # three of the layers in the call
    assert got.tolist() == pytest.approx([0.3 + 0.05 + 3 * per_layer])
    # a width profiled whole only is priced alike at every depth (tables written before per-depth probes)
    assert table.layer_marginal(4, depth, 1, 8).item() == pytest.approx(1.0)


def test_a_static_subnet_is_priced_at_its_own_depth_a_cascade_and_a_route_at_their_loop_s():
    table, one = deep_table(), group_ids([[0]], 1)
    assert ChainShape(((2, 3),), np.zeros(1, dtype="int64")).calls(one, np.array([8])).depth.tolist() == [3]
    assert per_input_ms(table, ChainShape(((2, 3),), np.zeros(1, dtype="int64")), one, np.array([8])) == \
        pytest.approx(0.3 + 0.05 + 3 * (1 / 3))
    cascade = ChainShape(((2, 2), (2, 3)), np.array([1]))  # both stages ran: 5 layers take turns
    assert cascade.calls(one, np.array([8])).depth.tolist() == [5, 5]
    route = SegmentShape(((1, 1), (2, 1)), np.array([[2, 2]]), np.array([2]), gated=True)
    assert route.calls(one, np.array([8])).depth.tolist() == [3, 3, 3]


def test_a_cascade_runs_each_stage_on_the_rows_that_reach_it_padding_trimmed():
    lengths = np.array([5, 9, 3, 7, 4])
    answered = np.array([0, 1, 1, 2, 0])  # the stage that answered each row
    shape = ChainShape(((2, 1), (2, 2), (4, 2)), answered)
    one_batch = group_ids([[0, 1, 2, 3]], 5)  # row 4 is not in this part of dev
    assert one_batch.tolist() == [0, 0, 0, 0, -1]
    assert shape.calls(one_batch, lengths).as_tuples() == [
        (2, 1, 1, 4, 9, True, 0), (2, 2, 1, 3, 9, True, 1), (4, 2, 1, 1, 7, True, 2)]
    table = linear_table()
    assert per_input_ms(table, shape, one_batch, lengths) == pytest.approx(
        table.cost(shape.calls(one_batch, lengths)).sum() / 4)
    # batches of one: every row pays its own calls at its own length
    singles = shape.calls(group_ids([[0], [1], [2], [3]], 5), lengths)
    assert sorted(zip(singles.index.tolist(), singles.span.tolist())) == [
        (0, 3), (0, 5), (0, 7), (0, 9), (1, 3), (1, 7), (1, 9), (2, 7)]


def test_a_segment_export_calls_the_embeddings_then_one_graph_per_width_among_the_rows_still_running():
    lengths = np.array([4, 8, 6])
    # three one-layer segments; the first two end with a gate (1 head inside), the last with the final head
    segments = ((1, 1), (1, 1), (1, 1))
    widths = np.array([[2, 2, 4], [4, 2, 2], [2, 4, 4]])
    runs = np.array([3, 1, 2])  # row 1 exits after segment 0, row 2 after segment 1
    got = SegmentShape(segments, widths, runs, gated=True).calls(group_ids([[0, 1, 2]], 3), lengths)
    assert got.as_tuples() == [(0, 0, 1, 3, 8, True, -1),
                               (2, 1, 1, 2, 6, False, 0), (4, 1, 1, 1, 8, False, 0),  # widths 2 (rows 0, 2) and 4
                               (2, 1, 1, 1, 4, False, 1), (4, 1, 1, 1, 6, False, 1),  # rows 0 and 2
                               (4, 1, 1, 1, 4, False, 2)]                             # row 0


def test_a_table_that_cannot_price_the_model_is_refused_in_one_line():
    table = linear_table()
    check_table(table, "t.json", 32, [2, 4])
    with pytest.raises(UserError, match=r"^--cost_table t.json: profiled for hidden size 32, the model has 64 "
                                        r"\(run --stage profile on this model\)$"):
        check_table(table, "t.json", 64, [2])
    with pytest.raises(UserError, match=r"^--cost_table t.json: no layer probe at 1,3 heads \(profiled: 2,4\); "
                                        r"run --stage profile with every --width_mult_list width$"):
        check_table(table, "t.json", 32, [1, 2, 3])
    with pytest.raises(UserError, match=r"^--cost_table t.json: no layer probe at 1 heads \(profiled: 2,4\); "):
        check_table(deep_table(), "t.json", 32, [1, 2])  # stacks per depth are not widths of their own


def test_a_missing_or_foreign_cost_table_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match=rf"^--cost_table {tmp_path}/cost_table.json: no such file "
                                        r"\(write one with --stage profile\)$"):
        read_cost_table(str(tmp_path))
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"task": "sst-2"}))
    with pytest.raises(UserError, match=rf"^--cost_table {path}: not a cost table written by --stage profile "
                                        r"\(KeyError: 'points'\)$"):
        read_cost_table(str(path))
    path.write_text(json.dumps(linear_table().to_json()))
    assert read_cost_table(str(path)).points == linear_table().points


@pytest.mark.parametrize("text, expected", [("0.4", (0.4, False)), ("12ms", (12.0, True)), (" 3.5MS", (3.5, True))])
def test_a_latency_budget_is_a_share_or_milliseconds(text, expected):
    from ofa_flexbert.config import parse_budget

    assert parse_budget(text) == expected


@pytest.mark.parametrize("text, message", [
    ("fast", r"^--latency_budget: expected a share of the full model's latency \(e.g. 0.4\) or milliseconds per "
             r"input \(e.g. 12ms\), got 'fast'$"),
    ("1.5", r"^--latency_budget: a share must be in \(0, 1\], got '1.5'$"),
    ("-2ms", r"^--latency_budget: milliseconds must be positive, got '-2ms'$")])
def test_a_bad_latency_budget_names_the_flag(text, message):
    from ofa_flexbert.config import parse_budget

    with pytest.raises(UserError, match=message):
        parse_budget(text)
