"""The inference setting (ofa_flexbert/adaptive/setting.py): modes, the plan and its JSON entry."""
import json

import pytest

from ofa_flexbert.adaptive.setting import (ENTRY_KEYS, FAMILIES, Mode, Plan, entry_of, family_label, family_of,
                                          read_inference_config)
from ofa_flexbert.errors import UserError


def test_a_mode_is_its_flag_name_everywhere():
    assert [m.value for m in Mode] == ["static", "w_dynamic", "d_dynamic", "wd_dynamic", "cascade"]
    assert json.dumps({"mode": Mode.WD_DYNAMIC}) == '{"mode": "wd_dynamic"}'  # files written before stay the same
    assert f"--{Mode.D_DYNAMIC}" == "--d_dynamic" and str(Mode.STATIC) == "static"
    assert Mode("w_dynamic") is Mode.W_DYNAMIC and Mode.W_DYNAMIC == "w_dynamic"
    assert [m.label for m in Mode] == ["static grid", "w-dynamic", "d-dynamic", "wd-dynamic", "cascade"]
    assert {m for m in Mode if m.gated} == {Mode.W_DYNAMIC, Mode.WD_DYNAMIC}
    assert {m for m in Mode if m.can_exit} == {Mode.D_DYNAMIC, Mode.WD_DYNAMIC}


def test_gates_run_unless_fixed_and_exits_need_the_flag_and_the_mode():
    assert Plan(mode="w_dynamic", widths=[0.25, 0.5]).gated
    assert not Plan(mode="w_dynamic", widths=(0.25, 0.5), fixed_gate=0.5).gated
    assert not Plan(mode="static", widths=(0.5,), early_exit=True).exits  # a static plan never exits
    assert not Plan(mode="d_dynamic", widths=(0.5,)).exits
    assert Plan(mode="d_dynamic", widths=(0.5,), early_exit=True).exits
    assert Plan(mode="static", widths=[1]).widths == (1.0,)


def test_entry_round_trip_and_the_exit_rule_only_when_inputs_exit():
    entry = {"mode": "wd_dynamic", "width_mult_list": [0.25, 0.5, 0.75, 1.0], "depth_mult": 1.0, "early_exit": True,
             "exit_threshold": 0.2, "normalized_entropy": True}
    plan = Plan.from_entry(entry)
    assert plan == Plan(mode=Mode.WD_DYNAMIC, widths=(0.25, 0.5, 0.75, 1.0), early_exit=True, exit_threshold=0.2,
                        normalized_entropy=True)
    assert plan.to_entry() == entry
    assert Plan(mode="static", widths=(0.5,), depth_mult=0.5, exit_threshold=0.3).to_entry() == \
        {"mode": "static", "width_mult_list": [0.5], "depth_mult": 0.5, "early_exit": False}
    assert plan.describe() == "wd_dynamic 0.25,0.5,0.75,1 t=0.2"
    assert Plan(mode="static", widths=(0.5,), depth_mult=0.5).describe() == "static 0.5 d0.5"
    row = {**entry, "gate_threshold": 0.4, "held_out": {"metric": 0.9}, "front": True}
    assert set(entry_of(row)) == set(ENTRY_KEYS) - {"cascade_depths", "cascade_thresholds", "quantize"}


def test_the_gate_threshold_is_written_only_when_gates_run_with_it():
    ranked = Plan(mode="wd_dynamic", widths=(0.25, 1.0), early_exit=True, exit_threshold=0.2, gate_threshold=0.4)
    assert Plan.from_entry(ranked.to_entry()) == ranked and ranked.to_entry()["gate_threshold"] == 0.4
    assert ranked.describe() == "wd_dynamic 0.25,1 g=0.4 t=0.2"
    assert "gate_threshold" not in Plan(mode="w_dynamic", widths=(0.25, 1.0)).to_entry()  # argmax: files as before
    assert "gate_threshold" not in Plan(mode="w_dynamic", widths=(0.25, 1.0), fixed_gate=0.5,
                                        gate_threshold=0.4).to_entry()  # no gates run
    with pytest.raises(ValueError, match=r"^--gate_threshold: a cumulative probability in \(0, 1\], got 1.5$"):
        Plan(mode="w_dynamic", widths=(0.25, 1.0), gate_threshold=1.5)


def test_an_int8_setting_is_written_as_such_and_is_a_family_of_its_own():
    int8 = Plan(mode="static", widths=(0.5,), depth_mult=0.75, quantize="int8")
    assert int8.to_entry() == {"mode": "static", "width_mult_list": [0.5], "depth_mult": 0.75, "early_exit": False,
                               "quantize": "int8"}
    assert Plan.from_entry(int8.to_entry()) == int8 and int8.describe() == "static 0.5 d0.75 int8"
    assert "quantize" not in Plan(mode="static", widths=(0.5,)).to_entry()  # float: files as before
    assert family_of(int8.to_entry()) == (Mode.STATIC, "int8") != family_of(Plan(mode="static", widths=(0.5,)).to_entry())
    assert [family_label(f) for f in FAMILIES] == ["static grid", "w-dynamic", "d-dynamic", "wd-dynamic", "cascade",
                                                   "static grid INT8"]
    with pytest.raises(ValueError, match=r"^quantize must be int8 or absent, got 'int4'$"):
        Plan(mode="static", widths=(0.5,), quantize="int4")


def test_read_inference_config_names_file_line_task_and_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"_comment": "x", "sst-2": {"mode": "static", "width_mult_list": [0.5]}}))
    assert read_inference_config(str(path), "sst-2") == {"mode": "static", "width_mult_list": [0.5]}
    with pytest.raises(UserError, match=rf"^--inference_config {path}: no settings for rte \(it has sst-2\)$"):
        read_inference_config(str(path), "rte")
    path.write_text(json.dumps({"sst-2": {"mode": "static", "width": 1}}))
    with pytest.raises(UserError, match=r"sst-2: unknown key\(s\) width; expected cascade_depths, cascade_thresholds, "
                                        r"depth_mult, early_exit, "):
        read_inference_config(str(path), "sst-2")
    path.write_text(json.dumps({"sst-2": {"mode": "fast"}}))
    with pytest.raises(UserError, match=r"mode must be one of static, w_dynamic, d_dynamic, wd_dynamic, cascade, "
                                        r"got 'fast'$"):
        read_inference_config(str(path), "sst-2")
    path.write_text(json.dumps({"sst-2": {"mode": "cascade", "width_mult_list": [0.25, 1.0], "cascade_thresholds": []}}))
    with pytest.raises(UserError, match=r"sst-2: not a setting \(a cascade needs two or more subnets, one depth each "
                                        r"and one threshold between two: got 2 widths, 2 depths, 0 thresholds\)$"):
        read_inference_config(str(path), "sst-2")
    path.write_text('{\n"sst-2":\n}')
    with pytest.raises(UserError, match=rf"^--inference_config {path}:3: not valid JSON"):
        read_inference_config(str(path), "sst-2")
