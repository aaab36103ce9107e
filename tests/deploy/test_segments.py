"""deploy.segments: where a dynamic setting's decisions cut its route (pure rules, closed forms)."""
import pytest

from ofa_flexbert.deploy.segments import Segment, cut_route, segment_widths


def test_one_gate_per_layer_cuts_every_layer_and_the_ramps_sit_at_their_steps():
    # 6 layers, a gate before every layer (steps 0..5), off-ramps after layers 2 and 3 (steps 3 and 4)
    segments = cut_route(range(6), gate_steps=range(6), ramp_steps=[3, 4])
    assert [(s.start, s.end) for s in segments] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert [s.gate for s in segments] == [1, 2, 3, 4, 5, None]  # gate 0 reads the embeddings; none at the end
    assert [s.ramp for s in segments] == [None, None, 0, 1, None, None]
    assert [s.last for s in segments] == [False] * 5 + [True]


def test_without_gates_segments_run_from_one_off_ramp_to_the_next():
    segments = cut_route([0, 1, 2, 3, 4, 5], ramp_steps=[3, 4])
    assert [(s.start, s.end, s.layers) for s in segments] == [(0, 3, (0, 1, 2)), (3, 4, (3,)), (4, 6, (4, 5))]
    assert [s.ramp for s in segments] == [0, 1, None] and all(s.gate is None for s in segments)


def test_a_decision_at_the_route_s_end_is_the_final_head_s():
    # a 4-layer route (depth 0.67 of 6): the off-ramp after layer 3 is where the route ends anyway
    segments = cut_route([0, 1, 2, 3], gate_steps=[0, 2, 4], ramp_steps=[3, 4])
    assert [(s.start, s.end, s.gate, s.ramp, s.last) for s in segments] == [
        (0, 2, 1, None, False), (2, 3, None, 0, False), (3, 4, None, None, True)]
    assert [Segment.from_json(s.to_json()) for s in segments] == segments
    with pytest.raises(ValueError, match="^a route needs at least one layer$"):
        cut_route([])


def test_gated_segments_run_at_the_class_widths_others_at_the_start_width():
    assert segment_widths([0.5, 0.5, 0.75, 0.75], 1.0, gated=True) == [0.5, 0.75]
    assert segment_widths([0.5], 0.5, gated=False) == [0.5]
