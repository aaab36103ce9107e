"""Run configuration: precedence, YAML typing, reference flag names, validation messages."""
import pytest

from ofa_flexbert.config import RunArgs, load_yaml_defaults, resolve
from ofa_flexbert.errors import UserError
from ofa_flexbert.app.cli import stage_parser


def parse(*argv):
    return vars(stage_parser().parse_args(list(argv)))


def write(tmp_path, text):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


def test_precedence_defaults_then_yaml_then_stage_section_then_flags(tmp_path):
    config = write(tmp_path, "learning_rate: 3.0e-5\nseed: 7\nstages:\n  width:\n    learning_rate: 1.0e-4\n"
                             "    num_train_epochs: 5\n")
    args = resolve(parse("--task", "rte", "--stage", "width", "--config", config, "--num_train_epochs", "2"))
    assert args.learning_rate == 1e-4  # stage section beats top level
    assert args.seed == 7  # top level beats the built-in default (42)
    assert args.num_train_epochs == 2.0  # the flag beats the stage section
    assert args.max_seq_length == RunArgs().max_seq_length  # built-in default
    other = resolve(parse("--task", "rte", "--stage", "finetune", "--config", config))
    assert other.learning_rate == 3e-5 and other.num_train_epochs == 3.0


def test_yaml_numbers_without_a_dot_are_still_floats(tmp_path):
    config = write(tmp_path, "learning_rate: 2e-5\nwidth_mult_list: [0.25, 1]\n")  # YAML 1.1 reads 2e-5 as a string
    values = load_yaml_defaults(config, "finetune")
    assert values["learning_rate"] == 2e-5 and values["width_mult_list"] == [0.25, 1.0]


def test_shipped_configs_carry_the_reference_hyper_parameters():
    width = resolve(parse("--task", "rte", "--stage", "width"))
    assert (width.learning_rate, width.width_lambda1, width.width_lambda2) == (2e-5, 1.0, 0.1)
    assert width.width_mult_list == [0.25, 0.5, 0.75, 1.0] and width.per_gpu_train_batch_size == 32
    depth = resolve(parse("--task", "rte", "--stage", "depth"))
    assert depth.depth_mult_list == [0.5, 0.75, 1.0] and (depth.depth_lambda1, depth.depth_lambda2) == (1.0, 1.0)
    gate = resolve(parse("--task", "sst-2", "--stage", "gate"))
    assert (gate.learning_rate, gate.seed) == (2e-4, 200)


def test_reference_flag_names_are_accepted():
    args = resolve(parse("--task_name", "RTE", "--training_phase", "dynabertw", "--per_gpu_train_batch_size", "8",
                         "--width_mult_list", "0.25,0.5,1.0", "--depth_mult_list", "1.", "--graft_during_training",
                         "--data_aug", "--logging_steps", "5", "--max_steps", "3"))
    assert (args.task, args.stage, args.per_gpu_train_batch_size) == ("rte", "width", 8)
    assert args.width_mult_list == [0.25, 0.5, 1.0] and args.depth_mult_list == [1.0]
    assert args.graft_during_training and args.data_aug and args.max_steps == 3
    assert resolve(parse("--task", "rte", "--training_phase", "final_finetuning")).stage == "final"


def test_a_boolean_from_yaml_can_be_switched_off_by_flag(tmp_path):
    config = write(tmp_path, "data_aug: true\n")
    assert resolve(parse("--task", "rte", "--stage", "width", "--config", config)).data_aug is True
    assert resolve(parse("--task", "rte", "--stage", "width", "--config", config, "--no-data_aug")).data_aug is False


@pytest.mark.parametrize("argv, message", [
    (("--task", "rte", "--stage", "width", "--width_mult_list", "0.5,1.5"), "--width_mult_list: 1.5 is outside (0, 1]"),
    (("--task", "rte", "--stage", "depth", "--depth_mult_list", "0"), "--depth_mult_list: 0 is outside (0, 1]"),
    (("--task", "foo", "--stage", "width"), "unknown task 'foo'; expected one of: cola, sst-2, mrpc, sts-b, qqp, "
                                            "mnli, qnli, rte, wnli"),
    (("--stage", "width"), "--task is required (e.g. --task rte)"),
    (("--task", "rte", "--stage", "finetune", "--learning_rate", "nan"), "--learning_rate: must be a positive number, "
                                                                        "got nan"),
    (("--task", "rte", "--stage", "finetune", "--max_grad_norm", "0"), "--max_grad_norm: must be a positive number, "
                                                                       "got 0"),
    (("--task", "rte", "--training_phase", "nope"), "--training_phase: unknown phase 'nope'; expected one of: "
                                                     "dynabertw, dynabert, final_finetuning, finetuning, traingate"),
    (("--task", "rte", "--stage", "export", "--dynamic_graphs", "layer"), "--dynamic_graphs: expected one of "
                                                                         "segments, layers, got 'layer'"),
])
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(UserError) as info:
        resolve(parse(*argv))
    assert str(info.value) == message


def test_bad_yaml_names_the_file_and_key(tmp_path):
    config = write(tmp_path, "learning_rat: 1.0e-4\n")
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == f"{config}: unknown key 'learning_rat' (expected flag names such as learning_rate)"
    config = write(tmp_path, "learning_rate: fast\n")
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == f"{config}: 'learning_rate: fast' is not a valid float"


def test_a_stage_section_that_is_not_a_mapping_is_refused(tmp_path):
    config = write(tmp_path, "stages:\n  width: [1, 2]\n")
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == f"{config}: 'stages.width' must map flag names to values"


def test_stage_all_checks_every_stage_section_before_running_any(tmp_path):
    from ofa_flexbert.app.stages import run

    config = write(tmp_path, "stages:\n  width:\n    learning_rat: 1.0\n")
    with pytest.raises(UserError) as info:
        run(parse("--task", "rte", "--stage", "all", "--config", config, "--model_dir", str(tmp_path / "m"),
                  "--output_dir", str(tmp_path / "out")))
    assert "unknown key 'learning_rat'" in str(info.value)
    assert not (tmp_path / "out").exists()  # finetune never started


def test_a_malformed_flag_is_a_one_line_error():
    with pytest.raises(UserError) as info:
        stage_parser().parse_args(["--learning_rate", "fast"])
    assert str(info.value) == "run_ofa_glue.py: argument --learning_rate: invalid float value: 'fast'"


@pytest.mark.parametrize("flag", ["--fixed_gate", "--hidden_dropout_prob"])
def test_an_optional_number_flag_is_a_number(flag):
    """Optional[float] fields (no default) are typed like the others, not taken as strings."""
    assert stage_parser().parse_args([flag, "0.5"]).__dict__[flag[2:]] == 0.5
    with pytest.raises(UserError) as info:
        stage_parser().parse_args([flag, "half"])
    assert str(info.value) == f"run_ofa_glue.py: argument {flag}: invalid float value: 'half'"


def test_every_stage_section_is_checked_whichever_stage_runs(tmp_path):
    config = write(tmp_path, "stages:\n  depth:\n    learning_rat: 1.0e-4\n")
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == f"{config}: unknown key 'learning_rat' (expected flag names such as learning_rate)"
    config = write(tmp_path, "stages:\n  widht:\n    learning_rate: 1.0e-4\n")
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == (f"{config}: unknown stage 'stages.widht' (expected one of finetune, width, depth, "
                               f"final, gate, infer, search, export, profile, all)")


@pytest.mark.parametrize("text", ["logging_steps: 2.5\n", "logging_steps: true\n", "learning_rate: true\n"])
def test_yaml_numbers_must_be_numbers_of_the_flags_type(tmp_path, text):
    config = write(tmp_path, text)
    key, value = text.strip().split(": ")
    kind = "int" if key == "logging_steps" else "float"
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--config", config))
    assert str(info.value) == f"{config}: '{key}: {True if value == 'true' else value}' is not a valid {kind}"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_epochs_must_be_finite(value):
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "finetune", "--num_train_epochs", value))
    assert str(info.value) == f"--num_train_epochs: must be a positive number, got {value}"


@pytest.mark.parametrize("argv,notes", [
    (("--stage", "depth", "--graft_during_training", "--distill", "--importance_holdout", "0.2"),
     ["--graft_during_training: the depth stage does not use it (no effect)",
      "--distill: the depth stage does not use it (no effect)",
      "--importance_holdout 0.2: the depth stage does not use it (no effect)"]),
    (("--stage", "width", "--macs_budget", "0.3"), ["--macs_budget 0.3: the width stage does not use it (no effect)"]),
    (("--stage", "infer", "--static", "--learning_rate", "1e-3", "--gate_cost_weight", "2"),
     ["--learning_rate 0.001: the infer stage does not use it (no effect)",
      "--gate_cost_weight 2: the infer stage does not use it (no effect)"]),
    (("--stage", "export", "--width_mult", "0.5", "--inference_config", "c.json", "--exit_thresholds", "0.1"),
     ["--exit_thresholds 0.1: the export stage does not use it (no effect)"]),
    (("--stage", "width", "--depth_mult_list", "0.5,1"), ["--depth_mult_list 0.5,1: the width stage does not use it "
                                                          "(no effect)"]),
    (("--stage", "finetune", "--balance_subnet_gradients"), ["--balance_subnet_gradients: the finetune stage does not "
                                                            "use it (no effect)"]),
    (("--stage", "depth", "--depth_mult_list", "0.5,1"), []),
])
def test_a_flag_the_stage_does_not_read_gets_one_line(argv, notes):
    from ofa_flexbert.config import no_effect_notes

    assert no_effect_notes(resolve(parse("--task", "rte", *argv))) == notes


def test_every_stage_of_the_chain_reads_its_own_flags_and_notes_come_once():
    """--stage all: a flag some stage of the chain reads is no note; the chain's notes are its first stage's."""
    from ofa_flexbert.app.stages import resolve_stages
    from ofa_flexbert.config import no_effect_notes

    chain = resolve_stages(parse("--task", "rte", "--stage", "all", "--model_dir", "M", "--output_dir", "/nonexistent/o",
                                 "--macs_budget", "0.3", "--graft_during_training", "--width_mult", "0.5"))
    assert [a.stage for a in chain] == ["finetune", "width", "depth", "final", "gate", "search", "infer"]
    assert all(a.chain == tuple(a2.stage for a2 in chain) for a in chain)
    assert [no_effect_notes(a) for a in chain] == [["--width_mult 0.5: no stage of --stage all does use it (no effect)"]] * 7


def test_the_fingerprint_flags_are_those_of_earlier_checkpoints():
    """Checkpoints written before the flags carried this fact (main at 095e54a) resume: the same 40 flags,
    plus the gate flags added since (a checkpoint without them resumes at their defaults)."""
    from ofa_flexbert.config import FINGERPRINT

    assert set(FINGERPRINT) - {"gate_target", "gate_features", "gate_inputs"} == {
        "task", "seed", "shuffle", "group_by_length", "data_aug", "distill", "per_gpu_train_batch_size",
        "max_seq_length", "gradient_accumulation_steps", "learning_rate", "warmup_steps", "weight_decay",
        "max_grad_norm", "adam_epsilon", "logging_steps", "width_mult_list", "depth_mult_list", "depth_rule",
        "graft_during_training", "graft_alpha", "graft_fraction", "graft_period", "graft_stop", "importance_data",
        "importance_holdout", "width_lambda1", "width_lambda2", "depth_lambda1", "depth_lambda2",
        "balance_subnet_gradients", "pooling", "num_gates", "gate_setting", "gate_class_weights",
        "regression_tolerance", "off_ramps", "train_off_ramps", "gate_training", "gate_macs_target",
        "gate_cost_weight"}


def test_help_is_grouped_by_stage():
    from ofa_flexbert.app.cli import stage_parser

    text = stage_parser().format_help()
    titles = ["common:", "training (every stage that trains):", "width stage:", "gate stage:",
              "inference (--stage infer, search, export):", "export stage:", "the reference implementation's flags:"]
    positions = [text.index("\n" + t + "\n") for t in titles]
    assert positions == sorted(positions)
    assert text.index("\n  --graft_alpha") > text.index("\nwidth stage:\n") > text.index("\n  --learning_rate")
    assert "--chain" not in text


def test_the_reference_s_remaining_flags_are_accepted_and_say_what_they_do():
    from ofa_flexbert.config import no_effect_notes

    args = resolve(parse("--task", "rte", "--stage", "width", "--load_checkpoint", "--cpu", "--evaluate_during_training",
                         "--num_workers", "16", "--hidden_dropout_prob", "0.1", "--attention_probs_dropout_prob", "0.1",
                         "--do_lower_case", "--gradient_accumulation_steps", "2"))
    assert args.resume and args.cpu and args.do_lower_case and args.gradient_accumulation_steps == 2
    assert no_effect_notes(args) == [
        "--evaluate_during_training: accepted for the reference's command lines, no effect (a training stage always "
        "evaluates every --logging_steps)",
        "--num_workers 16: accepted for the reference's command lines, no effect (data is tokenised once, in-process)",
        "--hidden_dropout_prob 0.1: accepted for the reference's command lines, no effect (dropout comes from the "
        "model's config.json)",
        "--attention_probs_dropout_prob 0.1: accepted for the reference's command lines, no effect (dropout comes "
        "from the model's config.json)"]
    with pytest.raises(UserError) as info:
        resolve(parse("--task", "rte", "--stage", "width", "--gradient_accumulation_steps", "0"))
    assert str(info.value) == "--gradient_accumulation_steps: must be a positive integer, got 0"


@pytest.mark.parametrize("flag,lower,warning", [
    (True, True, None), (None, False, None),
    (True, False, "--do_lower_case: the tokenizer in M keeps case, as the model was trained; it is used as saved"),
    (False, True, "--no-do_lower_case: the tokenizer in M lower-cases, as the model was trained; it is used as saved"),
])
def test_do_lower_case_is_checked_against_the_tokenizer(caplog, flag, lower, warning):
    import logging
    from types import SimpleNamespace

    from ofa_flexbert.app.stages.inputs import check_lower_case

    tokenizer = SimpleNamespace(basic_tokenizer=SimpleNamespace(do_lower_case=lower))
    with caplog.at_level(logging.WARNING, logger="ofa_flexbert"):
        check_lower_case(SimpleNamespace(do_lower_case=flag, model_dir="M"), tokenizer)
    assert [r.getMessage() for r in caplog.records] == ([warning] if warning else [])
