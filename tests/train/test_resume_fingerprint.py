"""A checkpoint written before a flag existed resumes only with the behaviour it ran with."""
import paddle
import pytest

from ofa_flexbert.config import FINGERPRINT, UNRECORDED, RunArgs
from ofa_flexbert.errors import UserError
from ofa_flexbert.train import checkpoint


def test_unrecorded_flags_take_the_value_old_checkpoints_ran_with():
    assert set(UNRECORDED) == set(FINGERPRINT)
    assert UNRECORDED["gate_features"] == "target" != RunArgs().gate_features  # the default changed behaviour
    assert UNRECORDED["gate_target"] == "correct" != RunArgs().gate_target  # agree became the default
    assert UNRECORDED["width_mult_list"] == RunArgs().width_mult_list


def test_an_old_gate_checkpoint_resumes_with_target_features_only(tmp_path):
    model = paddle.nn.Linear(2, 2)
    optimizer = paddle.optimizer.AdamW(parameters=model.parameters())
    old = {"stage": "gate", "seed": 42}  # written before --gate_features existed
    checkpoint.save(str(tmp_path), model, optimizer, checkpoint.LoopState(step=3, fingerprint=old))
    state, _ = checkpoint.load(str(tmp_path), model, optimizer, {**old, "gate_features": "target"}, UNRECORDED)
    assert state.step == 3
    with pytest.raises(UserError, match=r"other settings \(gate_features: target -> all_widths\)$"):
        checkpoint.load(str(tmp_path), model, optimizer, {**old, "gate_features": "all_widths"}, UNRECORDED)
