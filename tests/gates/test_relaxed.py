"""gate/relaxed.py: straight-through routing computes the engine's hard route, with gradients for the gates only."""
import numpy as np
import paddle

import patches
from gate.modules import GateRouter, Gates
from gate.relaxed import relaxed_classify
from gate.settings import GateSettings
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.store.models import freeze
from ofa_flexbert.engine.routes import Route


def sharp_gates(hidden: int, settings: GateSettings) -> Gates:
    """Gates with weights large enough that different inputs choose different widths."""
    paddle.seed(3)
    gates = Gates(hidden, settings)
    for param in gates.parameters():
        param.set_value(paddle.randn(param.shape) * 2.0)
    return gates


def test_the_relaxed_forward_is_the_engines_hard_route_and_only_the_gates_learn(tiny_bert, tiny_batch):
    patches.apply()
    ids, types = tiny_batch
    ids, types = paddle.concat([ids, ids[:, ::-1]]), paddle.concat([types, types])  # 6 rows, padding included
    model = freeze(tiny_bert)
    config = model.bert.config
    settings = GateSettings(3, 3, (0.25, 0.5, 0.75, 1.0), (0.25, 0.5, 0.5, 1.0))  # a map with a repeated width
    gates = sharp_gates(config.hidden_size, settings)
    router = GateRouter(gates, config, int(ids.shape[0]))
    with paddle.no_grad():
        engine = classify(model, ids, types, Route.uniform(config), hook=router).logits.numpy()
    relaxed = relaxed_classify(model, ids, types, gates, settings.class_widths, tau=1.0, noise=False)
    np.testing.assert_allclose(relaxed.logits.numpy(), engine, atol=1e-5)
    chosen = np.stack([c.numpy().argmax(axis=1) for c in relaxed.choices])
    np.testing.assert_array_equal(chosen, router.decisions)
    assert len({tuple(column) for column in chosen.T}) > 1  # the rows took different routes

    (relaxed.logits[:, 1] - relaxed.logits[:, 0]).sum().backward()
    for g, gate in enumerate(gates.gates):  # every gate, the first too, through the mixing of the layers after it
        grads = [p.grad for p in gate.parameters()]
        assert all(grad is not None and float(paddle.abs(grad).sum()) > 0 for grad in grads), g
    assert all(p.grad is None for p in model.parameters())  # the backbone is frozen


def test_gumbel_choices_are_one_hot_and_vary_with_the_noise(tiny_bert, tiny_batch):
    patches.apply()
    ids, types = tiny_batch
    model = freeze(tiny_bert)
    settings = GateSettings(3, 3, (0.25, 0.5, 1.0), (0.25, 0.5, 1.0))
    gates = Gates(model.bert.config.hidden_size, settings)  # near-uniform at init: the noise decides
    paddle.seed(0)
    draws = [np.stack([c.numpy() for c in relaxed_classify(model, ids, types, gates, settings.class_widths).choices])
             for _ in range(5)]
    for draw in draws:
        assert set(np.unique(draw)) <= {0.0, 1.0} and np.all(draw.sum(axis=-1) == 1)
    assert len({d.argmax(axis=-1).tobytes() for d in draws}) > 1
