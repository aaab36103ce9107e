"""The confidence cascade (ofa_flexbert/adaptive/cascade.py) and its pure rules (adaptive/tradeoff.py)."""
import math

import numpy as np
import paddle
import pytest

from conftest import tiny_bert_config
from gate.ramps import entropy
from ofa_flexbert.adaptive.cascade import CascadeRun
from ofa_flexbert.adaptive.runner import DynamicModel
from ofa_flexbert.adaptive.setting import Mode, Plan
from ofa_flexbert.adaptive.tradeoff import cascade_answers, cascade_chains
from ofa_flexbert.engine.accounting import subnet_macs
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.engine.routes import Route

pytestmark = pytest.mark.usefixtures("patched")

LENGTHS = [9, 4, 12, 7, 3, 12, 5, 8]


def test_chains_are_the_increasing_cost_pairs_and_triples():
    costs = [4.0, 1.0, 3.0, 2.0]
    chains = cascade_chains(costs)
    assert len(chains) == math.comb(4, 2) + math.comb(4, 3)
    assert chains[0] == (1, 3) and (1, 3, 2) in chains and (1, 3, 2, 0) not in chains
    assert all(costs[a] < costs[b] for chain in chains for a, b in zip(chain, chain[1:]))
    # equal costs are never chained: the second would pay twice for nothing cheaper
    assert cascade_chains([1.0, 1.0, 2.0]) == [(0, 2), (1, 2)]


def test_an_input_is_answered_by_the_first_stage_strictly_below_its_threshold():
    entropies = np.array([[0.1, 0.5, 0.5, 0.3],    # stage 0 (threshold 0.3)
                          [0.9, 0.2, 0.6, 0.1],    # stage 1 (threshold 0.25)
                          [0.0, 0.0, 0.0, 0.0]])   # the last stage answers whatever reaches it
    assert cascade_answers(entropies, [0.3, 0.25]).tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="^a cascade of 3 subnets needs 2 thresholds, got 1$"):
        cascade_answers(entropies, [0.3])


def test_a_cascade_plan_round_trips_through_its_entry():
    plan = Plan(mode="cascade", widths=(0.25, 0.5, 1.0), depths=(0.5, 1.0, 1.0), thresholds=(0.3, 0.2))
    entry = plan.to_entry()
    assert entry == {"mode": "cascade", "width_mult_list": [0.25, 0.5, 1.0], "depth_mult": 1.0, "early_exit": False,
                     "cascade_depths": [0.5, 1.0, 1.0], "cascade_thresholds": [0.3, 0.2], "normalized_entropy": False}
    assert Plan.from_entry(entry) == plan
    assert plan.describe() == "cascade 0.25d0.5,0.5,1 t=0.3,0.2"
    assert plan.stages == [(0.25, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert Plan(mode="cascade", widths=(0.25, 1.0), thresholds=(0.4,)).depths == (1.0, 1.0)
    assert not plan.gated and not plan.exits
    with pytest.raises(ValueError, match="one threshold between two: got 2 widths, 2 depths, 2 thresholds$"):
        Plan(mode="cascade", widths=(0.25, 1.0), thresholds=(0.4, 0.4))


def tiny_model():
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(5)
    model = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=4, num_labels=3))
    model.bert.config.pooling = "mean"
    with paddle.no_grad():  # decisive logits: entropies spread out, far apart compared with float noise
        model.classifier.weight.set_value(model.classifier.weight * 300.0)
    model.eval()
    return model


def between(values):
    """A threshold halfway between the two middle values: no input's entropy is near it."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def tiny_batch(lengths=LENGTHS):
    rng = np.random.RandomState(2)
    ids = rng.randint(5, 40, size=(len(lengths), max(lengths))).astype("int64")
    for row, length in enumerate(lengths):
        ids[row, length:] = 0
    return {"input_ids": paddle.to_tensor(ids), "token_type_ids": paddle.to_tensor(np.zeros_like(ids))}


def static_pass(model, batch, width, depth):
    """Every row through one static subnet: logits and entropies (the independent computation)."""
    with paddle.no_grad():
        logits = classify(model, batch["input_ids"], batch["token_type_ids"],
                          Route.uniform(model.bert.config, width, depth)).logits
    return logits.numpy(), entropy(logits).numpy()


def test_the_cascade_answers_each_row_from_the_first_sure_subnet_and_counts_every_subnet_it_ran():
    model, batch = tiny_model(), tiny_batch()
    config = model.bert.config
    stages = [(0.25, 0.5), (0.5, 1.0), (1.0, 1.0)]
    passes = [static_pass(model, batch, w, d) for w, d in stages]
    ents = np.stack([e for _, e in passes])
    # thresholds between the entropies, so that each stage answers some rows
    first = between(ents[0])
    thresholds = (first, between(ents[1][ents[0] >= first]))
    plan = Plan(mode=Mode.CASCADE, widths=[w for w, _ in stages], depths=[d for _, d in stages], thresholds=thresholds)
    dynamic = DynamicModel(model, None, None, plan)
    logits, runs = dynamic.run(batch)
    answer = cascade_answers(ents, thresholds)
    assert sorted(set(answer.tolist())) == [0, 1, 2]
    for row, stage in enumerate(answer):
        np.testing.assert_allclose(logits[row], passes[stage][0][row], atol=1e-5)
        assert isinstance(runs[row], CascadeRun) and len(runs[row].routes) == stage + 1
        expected = sum(subnet_macs(config, w, d, LENGTHS[row]) for w, d in stages[:stage + 1])
        assert dynamic.macs(runs[row], LENGTHS[row]) == expected  # closed form: the subnets it ran


def test_a_batch_of_many_equals_row_by_row():
    model, batch = tiny_model(), tiny_batch()
    plan = Plan(mode=Mode.CASCADE, widths=(0.25, 1.0), thresholds=(1.0,))
    dynamic = DynamicModel(model, None, None, plan)
    logits, runs = dynamic.run(batch)
    for row, length in enumerate(LENGTHS):
        one = {k: v[row:row + 1, :length] for k, v in batch.items()}
        alone, alone_runs = dynamic.run(one)
        np.testing.assert_allclose(logits[row], alone[0], atol=1e-5)
        assert runs[row] == alone_runs[0]
