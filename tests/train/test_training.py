"""The shared training step: how the subnets' gradients are combined."""
import numpy as np
import paddle
import pytest

from ofa_flexbert.engine.routes import Subnet
from ofa_flexbert.train.loop import backward_each

SUBNETS = [Subnet(1.0, 1.0), Subnet(1.0, 0.5)]


def two_scale_losses():
    """A small model and two 'subnets' whose gradients differ in size by orders of magnitude."""
    paddle.seed(3)
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.Tanh(), paddle.nn.Linear(3, 2))
    x = paddle.to_tensor(np.random.RandomState(0).randn(5, 4).astype("float32"))

    def loss_of(subnet):
        out = model(x)
        loss = 100.0 * out.sum() if subnet.depth_mult == 1.0 else 0.01 * (out ** 2).mean()
        return f"d{subnet.depth_mult:g}", loss, {}

    return model, loss_of


def separate_gradients(model, loss_of):
    """Each subnet's gradient on its own, as numpy (the independent computation)."""
    grads = []
    for subnet in SUBNETS:
        model.clear_gradients()
        loss_of(subnet)[1].backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    model.clear_gradients()
    return grads


@pytest.mark.parametrize("balance", [False, True])
def test_subnet_gradients_are_summed_plainly_or_each_scaled_to_unit_norm(balance):
    model, loss_of = two_scale_losses()
    grads = separate_gradients(model, loss_of)
    norms = [np.sqrt(sum((g.astype("float64") ** 2).sum() for g in gs)) for gs in grads]
    assert norms[0] > 1e3 * norms[1]  # the small subnet would be invisible in a plain sum
    weights = [1 / n for n in norms] if balance else [1.0, 1.0]
    expected = [weights[0] * a + weights[1] * b for a, b in zip(*grads)]

    logs = backward_each(SUBNETS, loss_of, model if balance else None)
    for p, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-7)
    if balance:
        assert logs["d1/grad_norm"] == pytest.approx(norms[0], rel=1e-5)
        assert logs["d0.5/grad_norm"] == pytest.approx(norms[1], rel=1e-5)
    else:
        assert "d1/grad_norm" not in logs
