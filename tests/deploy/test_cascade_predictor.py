"""The cascade predictor's numpy pieces agree with the engine's."""
import numpy as np
import paddle
import pytest

from gate.ramps import entropy as engine_entropy
from ofa_flexbert.deploy.cascade_predictor import stage_route
from ofa_flexbert.deploy.runtime import entropy
from ofa_flexbert.deploy.layout import route_description
from ofa_flexbert.engine.routes import Route


@pytest.mark.parametrize("normalized", [False, True])
def test_the_numpy_entropy_is_the_exit_checks(normalized):
    logits = np.random.default_rng(0).normal(scale=4.0, size=(50, 3)).astype("float32")
    np.testing.assert_allclose(entropy(logits, normalized),
                               engine_entropy(paddle.to_tensor(logits), normalized).numpy(), atol=1e-6)


def test_a_stage_route_is_read_back_from_its_manifest(tiny_bert):
    route = Route.uniform(tiny_bert.bert.config, 0.5, 2 / 3)
    assert stage_route(route_description(route)) == route
