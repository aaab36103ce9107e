"""The routed encoder: per-layer widths, per-row routes in one batch, gates and exits through a hook."""

import numpy as np
import paddle
import pytest

from conftest import tiny_bert_config
from numpy_bert import bert_forward, classifier_logits, sliced_hf_weights
from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.encoder import Between, classify
from ofa_flexbert.engine.routes import Route, heads_width
from ofa_flexbert.train.supernet import FlexOFA, convert_to_supernet, plain_state_dict

pytestmark = pytest.mark.usefixtures("patched")

LAYERS, HEADS, HEAD_DIM, FFN = 4, 4, 8, 64
LENGTHS = [9, 6, 9, 4, 7]  # rows 1, 3 and 4 are padded in a batch


def width(heads):
    return heads_width(heads, HEADS, HEAD_DIM, FFN)


# Five rows, four different routes (rows 1 and 4 share one): full, mixed per-layer widths, a skipped
# layer, and an exit after two layers.
ROUTES = [
    Route((0, 1, 2, 3), (width(4),) * 4),
    Route((0, 1, 2, 3), (width(1), width(4), width(2), width(3))),
    Route((0, 2), (width(2), width(4))),
    Route((0, 1, 2, 3), (width(4), width(3), width(1), width(1)), exit_after=2),
    Route((0, 1, 2, 3), (width(1), width(4), width(2), width(3))),
]


def make_model(pooling="cls", supernet=False):
    """A random 4-layer BERT classifier; as an OFA supernet set to a quarter-width subnet if asked
    (explicit route widths must override whatever OFA's config says)."""
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(1)
    model = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=LAYERS))
    model.bert.config.pooling = pooling
    if supernet:
        model = convert_to_supernet(model, [0.25, 0.5, 1.0])
        ofa = FlexOFA(model)
        ofa.use(ofa.subnet_config(0.25))
        object.__setattr__(model, "_ofa", ofa)  # keep it alive, not as a sublayer (a cycle)
    model.eval()
    return model


def batch(lengths=LENGTHS, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, 40, size=(len(lengths), max(lengths))).astype("int64")
    types = np.zeros_like(ids)
    types[:, 3:] = 1
    for row, length in enumerate(lengths):
        ids[row, length:] = 0
        types[row, length:] = 0
    return ids, types


def numpy_logits(model, route, ids, types):
    """The route as an independent dense float64 model: its executed layers, each sliced to its width."""
    executed = route.executed
    weights = sliced_hf_weights(plain_state_dict(model), [w.heads for _, w in executed], HEAD_DIM,
                                [w.ffn for _, w in executed], layers=[layer for layer, _ in executed])
    config = {"hidden_size": 32, "num_attention_heads": HEADS, "head_dim": HEAD_DIM, "num_hidden_layers": len(executed),
              "layer_norm_eps": model.bert.config.layer_norm_eps, "hidden_act": "gelu", "pad_token_id": 0,
              "pooling": model.bert.config.pooling}
    _, pooled = bert_forward(weights, config, ids, types)
    return classifier_logits(weights, pooled)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("supernet", [False, True], ids=["plain", "supernet"])
def test_rows_with_different_routes_get_what_they_get_alone_and_what_numpy_computes(pooling, supernet):
    model = make_model(pooling, supernet)
    ids, types = batch()
    with paddle.no_grad():
        out = classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), ROUTES)
        together = out.logits.numpy()
        for row, (route, length) in enumerate(zip(ROUTES, LENGTHS)):
            alone = classify(model, paddle.to_tensor(ids[row:row + 1, :length]),
                             paddle.to_tensor(types[row:row + 1, :length]), route).logits.numpy()
            assert np.abs(together[row] - alone[0]).max() <= 1e-5, row
            expected = numpy_logits(model, route, ids[row:row + 1, :length], types[row:row + 1, :length])
            np.testing.assert_allclose(together[row], expected[0], atol=1e-5, rtol=0, err_msg=str(row))
    assert out.routes == ROUTES  # no hook: each row took the route it was given
    # rows really differ by route: the same input on two routes gives two answers
    assert np.abs(together[1] - together[0]).max() > 1e-3


def test_a_uniform_batch_runs_per_layer_mixed_widths_through_the_patched_forwards():
    """``route=`` on the patched classifier: the whole batch at one route, equal to the sliced dense model."""
    model = make_model("cls", supernet=True)
    ids, types = batch()
    route = ROUTES[1]
    with paddle.no_grad():
        logits = model(paddle.to_tensor(ids), token_type_ids=paddle.to_tensor(types), route=route).numpy()
    np.testing.assert_allclose(logits, numpy_logits(model, route, ids, types), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layer_indices or route"):
        model.bert(paddle.to_tensor(ids), route=route, layer_indices=[0])


def test_the_hook_sets_widths_and_retires_rows_which_then_cost_nothing():
    """A gate-like hook picks each row's width for two layers at a time; an exit check retires
    rows 0 and 2 after two layers.  The result equals the explicit routes the rows took, and the
    encoder layers see exactly the rows still running."""
    model = make_model("mean")
    ids, types = batch()
    seen = []

    def hook(state: Between):
        seen.append((state.step, list(state.rows)))
        if state.step in (0, 2):  # a "gate": row r gets 1 + (r + step) % 4 heads for the next 2 layers
            state.set_widths([width(1 + (r + state.step) % 4) for r in state.rows], layers=2)
        if state.step == 2:
            state.exit([r in (0, 2) for r in state.rows])
        assert state.pooled().shape == [len(state.rows), 32]

    rows_per_layer = []
    handles = [layer.register_forward_post_hook(lambda l, i, o: rows_per_layer.append(int(o.shape[0])))
               for layer in model.bert.encoder.layers]
    full = [Route.uniform(model.bert.config)] * 4 + [ROUTES[2]]  # row 4 runs layers 0 and 2 only
    with paddle.no_grad():
        out = classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), full, hook=hook)
    for handle in handles:
        handle.remove()
    assert [r.exit_after for r in out.routes] == [2, None, 2, None, None]
    assert [w.heads for w in out.routes[1].widths] == [2, 2, 4, 4]  # 1+(1+0)%4 for layers 0-1, 1+(1+2)%4 after
    assert [w.heads for w in out.routes[4].widths] == [1, 1]  # its whole 2-layer route is the first block
    assert seen[0] == (0, [0, 1, 2, 3, 4]) and seen[2][0] == 2
    assert sorted(seen[3][1]) == [1, 3]  # after the exits only rows 1 and 3 still have layers to run
    # every row at every step it ran, each exactly once: 5 + 5 + 2 + 2 rows over four steps
    assert sum(rows_per_layer) == sum(len(r.executed) for r in out.routes) == 14
    with paddle.no_grad():
        again = classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), out.routes).logits.numpy()
    np.testing.assert_allclose(out.logits.numpy(), again, atol=1e-6, rtol=0)


def test_an_exit_uses_the_head_of_its_layer():
    model = make_model("cls")
    ids, types = batch()
    ramp = paddle.nn.Linear(32, 2)
    route = Route(tuple(range(LAYERS)), (width(4),) * LAYERS, exit_after=2)
    with paddle.no_grad():
        logits = classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), route, exit_heads={2: ramp}).logits
        hidden = model.bert(paddle.to_tensor(ids), token_type_ids=paddle.to_tensor(types), layer_indices=[0, 1])[0]
        np.testing.assert_allclose(logits.numpy(), ramp(hidden[:, 0]).numpy(), atol=1e-6, rtol=0)


def test_hook_decisions_are_checked():
    model = make_model()
    ids, types = batch()

    def exit_at_once(state):
        state.exit([True] * len(state.rows))

    with pytest.raises(ValueError, match="cannot exit before its first layer"):
        classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), hook=exit_at_once)
    with pytest.raises(ValueError, match="one width per running row: 5, got 1"):
        classify(model, paddle.to_tensor(ids), paddle.to_tensor(types),
                 hook=lambda state: state.set_widths([width(1)], layers=1))
    with pytest.raises(ValueError, match="one route per row: 5 rows, 2 routes"):
        classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), ROUTES[:2])


def test_gradients_reach_every_route_s_weights_through_grouping():
    """Training through mixed routes (gates trained on the routes they take) needs gradients across
    the gather and concat; a row's loss reaches exactly the weight slices its route used."""
    model = make_model()
    model.train()
    ids, types = batch()
    routes = [Route((0,), (width(1),)), Route((0,), (width(2),)), Route((0,), (width(1),)),
              Route((0,), (width(1),)), Route((0,), (width(1),))]
    logits = classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), routes).logits
    logits[1].sum().backward()  # only row 1 (2 heads) contributes
    grad = model.bert.encoder.layers[0].self_attn.q_proj.weight.grad.numpy()
    assert np.abs(grad[:, :16]).sum() > 0 and np.abs(grad[:, 16:]).sum() == 0


class MacCounter:
    """Counts the multiply-accumulates the forward actually runs: every ``F.linear`` (tokens x in x
    out) and ``paddle.matmul`` (batch x M x K x N) call, the outermost call only."""

    def __init__(self, monkeypatch):
        self.total, self._inside = 0, False
        self._linear, self._matmul = paddle.nn.functional.linear, paddle.matmul
        monkeypatch.setattr(paddle.nn.functional, "linear", self.linear)
        monkeypatch.setattr(paddle, "matmul", self.matmul)

    def _count(self, run, macs):
        if self._inside:
            return run()
        self._inside = True
        try:
            self.total += macs
            return run()
        finally:
            self._inside = False

    def linear(self, x, weight, bias=None, name=None):
        tokens = int(np.prod(x.shape[:-1]))
        return self._count(lambda: self._linear(x, weight, bias, name),
                           tokens * int(weight.shape[0]) * int(weight.shape[1]))

    def matmul(self, x, y, transpose_x=False, transpose_y=False, name=None):
        m, k = (x.shape[-1], x.shape[-2]) if transpose_x else (x.shape[-2], x.shape[-1])
        n = y.shape[-2] if transpose_y else y.shape[-1]
        macs = int(np.prod(x.shape[:-2])) * int(m) * int(k) * int(n)
        return self._count(lambda: self._matmul(x, y, transpose_x, transpose_y, name), macs)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_route_macs_equal_the_multiplications_run_for_mixed_widths_and_exits(pooling, monkeypatch):
    model = make_model(pooling)
    config = model.bert.config
    counter = MacCounter(monkeypatch)
    ids, types = batch()
    with paddle.no_grad():
        for route, length in zip(ROUTES, LENGTHS):  # one row at a time, at its real length
            counter.total = 0
            classify(model, paddle.to_tensor(ids[:1, :length]), paddle.to_tensor(types[:1, :length]), route)
            assert counter.total == route_macs(config, route, length), route
        # a batch of equal-length rows: retired rows add nothing, the rest exactly their routes
        same = batch([8] * len(ROUTES), seed=3)
        counter.total = 0
        classify(model, paddle.to_tensor(same[0]), paddle.to_tensor(same[1]), ROUTES)
    assert counter.total == sum(route_macs(config, route, 8) for route in ROUTES)
