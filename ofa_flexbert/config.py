"""Run configuration: one dataclass, filled from defaults < configs/<task>.yaml < flags.

Why this shape: every stage reads the same :class:`RunArgs`, so a hyper-parameter has
one name everywhere (the Flexible-BERT reference's flag names, so its users can port
their scripts), one default, and one place where it is validated.  The YAML file holds
per-task values; its ``stages:`` section holds per-stage values (e.g. the gate stage's
learning rate 2e-4 against 2e-5 elsewhere).  A flag given on the command line always wins.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, get_type_hints

import yaml

from .errors import UserError
from ofa_flexbert.engine.routes import DEPTH_RULES, POOLINGS
from ofa_flexbert.glue.tasks import get_task  # the single list of tasks

EXPORT_FORMATS = ("paddle", "onnx")
GATE_TRAINING = ("targets", "routes")  # what --stage gate trains the gates on (stages/gate.py)
STAGES = ("finetune", "width", "depth", "final", "gate", "infer", "search", "export", "all")
# The reference's --training_phase values, mapped to our stages.  Its "finetuning" phase
# runs the final-fine-tuning code path (docs/reference.md, Final fine-tuning), so it maps to "final".
TRAINING_PHASES = {"dynabertw": "width", "dynabert": "depth", "final_finetuning": "final", "finetuning": "final",
                   "traingate": "gate"}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


TRAINING = ("finetune", "width", "depth", "final", "gate")  # the stages that train, and read the training flags
# --help's sections, in order: each flag's ``group``.
HELP_GROUPS = {"common": "common", "training": "training (every stage that trains)",
               "subnets": "subnets (widths, depths, the supernet)", "width": "width stage", "depth": "depth and final stages",
               "gates": "gate stage", "inference": "inference (--stage infer, search, export)", "export": "export stage",
               "reference": "the reference implementation's flags", "internal": None}


def _flag(help: str, default: Any = None, aliases: tuple[str, ...] = (), group: str = "common",
          stages: Optional[tuple[str, ...]] = None, fingerprint: bool = False, **extra) -> Any:
    """A dataclass field that also describes its command-line flag and the facts the code derives from it.

    ``group``: its section of --help; ``stages``: the stages that read it (None: every stage) -- given
    to another stage it gets a "no effect" line; ``fingerprint``: part of the resume fingerprint (a
    resumed run must agree on it to end where the uninterrupted run ends).
    """
    assert group in HELP_GROUPS, group
    factory = extra.pop("default_factory", None)
    meta = {"help": help, "aliases": aliases, "group": group, "stages": stages, "fingerprint": fingerprint}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunArgs:
    """Everything a stage needs to run: one field per flag, with its facts (see :func:`_flag`)."""

    task: Optional[str] = _flag("GLUE task: cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, wnli", aliases=("--task_name",),
                                group="common", fingerprint=True)
    stage: Optional[str] = _flag("stage to run: " + ", ".join(STAGES), group="common")
    model_dir: Optional[str] = _flag("input model directory (Paddle format; see `convert` for HF checkpoints)",
                                     group="common")
    data_dir: Optional[str] = _flag("task data folder with train.tsv/dev.tsv (default: $GLUE_DIR/<TASK>)",
                                    group="common")
    output_dir: Optional[str] = _flag("where the stage writes its model, results and VisualDL logs", group="common")
    config: Optional[str] = _flag("YAML file of defaults (default: configs/<task>.yaml)", group="common")
    max_seq_length: int = _flag("truncate sequences to this many tokens; batches pad to their longest", 128,
                                group="common", fingerprint=True)
    learning_rate: float = _flag("peak learning rate", 2e-5, group="training", stages=TRAINING, fingerprint=True)
    per_gpu_train_batch_size: int = _flag("training batch size per device", 32, aliases=("--train_batch_size",),
                                          group="training", stages=TRAINING, fingerprint=True)
    per_gpu_eval_batch_size: int = _flag("evaluation batch size per device", 32, aliases=("--eval_batch_size",),
                                         group="common")
    num_train_epochs: float = _flag("training epochs", 3.0, group="training", stages=TRAINING)
    max_steps: int = _flag("stop after this many optimizer steps (> 0 overrides epochs)", -1,
                           group="training", stages=TRAINING)
    warmup_steps: int = _flag("linear warm-up steps before linear decay", 0,
                              group="training", stages=TRAINING, fingerprint=True)
    weight_decay: float = _flag("AdamW weight decay (not on biases and LayerNorms)", 0.0,
                                group="training", stages=TRAINING, fingerprint=True)
    adam_epsilon: float = _flag("AdamW epsilon", 1e-8, group="training", stages=TRAINING, fingerprint=True)
    max_grad_norm: float = _flag("clip gradients to this global L2 norm", 1.0,
                                 group="training", stages=TRAINING, fingerprint=True)
    gradient_accumulation_steps: int = _flag("batches whose gradients add up to one optimizer step (the update of "
                                             "one k-times larger batch); steps, schedules and --logging_steps "
                                             "count optimizer steps", 1,
                                             group="training", stages=TRAINING, fingerprint=True)
    logging_steps: int = _flag("evaluate, log and keep the best checkpoint every N steps (and at the end)", 200,
                               group="training", stages=TRAINING, fingerprint=True)
    seed: int = _flag("random seed (python, numpy, paddle, data order)", 42, group="common", fingerprint=True)
    shuffle: bool = _flag("shuffle training data each epoch (the reference does not: docs/reference.md, defect §11.4)", True,
                          group="training", stages=TRAINING, fingerprint=True)
    group_by_length: bool = _flag("batch training sentences of similar length (sorted within pools of 50 batches, "
                                  "batches shuffled): less padding, other batches than the default", False,
                                  group="training", stages=TRAINING, fingerprint=True)
    data_aug: bool = _flag("append augmented data (train_aug.tsv or train_<TASK>_aug_with_logits.tsv)", False,
                           group="training", stages=TRAINING, fingerprint=True)
    width_mult_list: list[float] = _flag("width multipliers, each in (0, 1]", default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
                                         group="subnets", stages=("width", "depth", "final", "gate", "infer", "search"), fingerprint=True)
    depth_mult_list: list[float] = _flag("depth multipliers, each in (0, 1]", default_factory=lambda: [1.0],
                                         group="subnets", stages=("depth", "final", "infer", "search"), fingerprint=True)
    width_lambda1: float = _flag("width stage: weight of the logit distillation loss", 1.0,
                                 group="width", stages=("width",), fingerprint=True)
    width_lambda2: float = _flag("width stage: weight of the hidden-state distillation loss", 0.1,
                                 group="width", stages=("width",), fingerprint=True)
    depth_lambda1: float = _flag("depth stage: weight of the logit distillation loss", 1.0,
                                 group="depth", stages=("depth", "final"), fingerprint=True)
    depth_lambda2: float = _flag("depth stage: weight of the hidden-state distillation loss", 1.0,
                                 group="depth", stages=("depth", "final"), fingerprint=True)
    graft_during_training: bool = _flag("width stage: neural grafting", False,
                                        group="width", stages=("width",), fingerprint=True)
    graft_alpha: float = _flag("grafting: share of the donor mixed into a receiver", 0.1,
                               group="width", stages=("width",), fingerprint=True)
    graft_fraction: float = _flag("grafting: fraction of heads and of FFN neurons that receive", 0.5,
                                  group="width", stages=("width",), fingerprint=True)
    graft_period: int = _flag("grafting: steps between grafts (0 = a third of an epoch)", 0,
                              group="width", stages=("width",), fingerprint=True)
    graft_stop: int = _flag("grafting: last step that may graft (-1 = until the last epoch starts)", -1,
                            group="width", stages=("width",), fingerprint=True)
    depth_rule: str = _flag("layers of a depth-d subnet: prefix (Flexible-BERT: the first round(L*d)), "
                            "every_other (PaddleNLP's variant of DynaBERT's rule: layer floor((i+1)/d)-1) or "
                            "dynabert (DynaBERT's own code: layer floor(i/d))", "prefix",
                            group="subnets", stages=("depth", "final"), fingerprint=True)
    pooling: Optional[str] = _flag("what the classifier reads: cls ([CLS], the reference's) or mean (the masked "
                                   "mean of the tokens, as sentence-transformers are trained); chosen at --stage "
                                   "finetune (default cls) and recorded in the model; later stages use the model's",
                                   None, group="common", fingerprint=True)
    balance_subnet_gradients: bool = _flag("scale each subnet's gradient to unit norm before summing them into one "
                                           "step (off: the reference's plain sum; see docs/design.md, Depth)", False,
                                           group="subnets", stages=("width", "depth", "final"), fingerprint=True)
    distill: bool = _flag("width stage: distil from the teacher (implied by --data_aug); else CE on labels", False,
                          group="width", stages=("width",), fingerprint=True)
    importance_data: str = _flag("data for head/neuron importance: holdout (a slice of train, kept out of "
                                 "training) or dev (the reference; dev labels then shape the model)", "holdout",
                                 group="width", stages=("width",), fingerprint=True)
    importance_holdout: float = _flag("fraction of the training set held out for importance", 0.1,
                                      group="width", stages=("width",), fingerprint=True)
    num_gates: int = _flag("gate stage: gates per model; each decides the width of the next L/num_gates layers "
                           "(0 = one per layer, the reference's default of 12 on BERT-base); must divide L", 0,
                           group="gates", stages=("gate",), fingerprint=True)
    gate_setting: list[float] = _flag("gate stage: widths whose uniform subnets define the gate targets, increasing "
                                      "(class k = the smallest width that gets an input right)",
                                      default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
                                      group="gates", stages=("gate",), fingerprint=True)
    gate_class_weights: list[float] = _flag("gate stage: loss weight per gate class (default: balanced weights "
                                            "n/(K*n_k) from the training targets)", default_factory=list,
                                            group="gates", stages=("gate",), fingerprint=True)
    off_ramps: list[int] = _flag("gate stage: 0-based layers after which an input may exit early (default: the "
                                 "last of the first L/2 and of the first 3L/4 layers; the reference's 5,8 of 12)",
                                 default_factory=list, group="gates", stages=("gate",), fingerprint=True)
    train_off_ramps: bool = _flag("gate stage: also distil each off-ramp from the final classifier's logits "
                                  "(backbone frozen); off: copies of the final head, as in the reference", False,
                                  group="gates", stages=("gate",), fingerprint=True)
    gate_training: str = _flag("gate stage: what the gates learn from: targets (the reference: each input's "
                               "smallest correct width, on features at that width) or routes (distil the full "
                               "model through the routes the gates take, straight-through Gumbel, with a MACs "
                               "penalty; see docs/design.md)", "targets", group="gates", stages=("gate",), fingerprint=True)
    gate_macs_target: float = _flag("gate stage, --gate_training routes: the gated model's mean MACs, as a share of "
                                    "the full model's, above which the penalty applies", 0.5,
                                    group="gates", stages=("gate",), fingerprint=True)
    gate_cost_weight: float = _flag("gate stage, --gate_training routes: weight of the MACs penalty "
                                    "(per unit of share above --gate_macs_target; at 1 the target did not hold "
                                    "on MiniLM SST-2, at 50 it did: docs/benchmarks.md)", 50.0,
                                    group="gates", stages=("gate",), fingerprint=True)
    regression_tolerance: float = _flag("gate stage, regression tasks: a width 'gets an input right' when "
                                        "|prediction - label| <= this", 0.5,
                                        group="gates", stages=("gate",), fingerprint=True)
    static: bool = _flag("infer stage: a static subnet: --width_mult_list (identical values) at the first "
                         "--depth_mult_list depth, no gates", False, group="inference", stages=("infer",))
    w_dynamic: bool = _flag("infer stage: the gates pick each block's width (class k -> --width_mult_list[k])", False,
                            group="inference", stages=("infer",))
    d_dynamic: bool = _flag("infer stage: one width, inputs leave early at the off-ramps (needs --early_exit)", False,
                            group="inference", stages=("infer",))
    wd_dynamic: bool = _flag("infer stage: gates pick widths and inputs leave early (with --early_exit)", False,
                             group="inference", stages=("infer",))
    fixed_gate: Optional[float] = _flag("infer stage, with --w_dynamic/--wd_dynamic: every block runs at this width "
                                        "instead of the gates' choice (the gates do not run; an ablation; the "
                                        "reference's flag, which crashes there)", None,
                                        group="inference", stages=("infer",))
    early_exit: bool = _flag("infer stage: check the off-ramps; leave when the entropy < --exit_threshold", False,
                             group="inference", stages=("infer",))
    exit_threshold: float = _flag("infer stage: early-exit entropy threshold (natural log; strict <)", 0.57,
                                  group="inference", stages=("infer",))
    normalized_entropy: bool = _flag("infer stage: divide the exit entropy by ln(classes)", False,
                                     group="inference", stages=("infer", "search"))
    exit_thresholds: list[float] = _flag("search stage: exit thresholds to try (units of --exit_threshold; "
                                         "default: 40 evenly spaced up to the largest entropy)", default_factory=list,
                                         group="inference", stages=("search",))
    macs_budget: float = _flag("search stage: the best setting costing at most this share of the full model's "
                               "MACs is written as inference_config.json", 0.5, group="inference", stages=("search",))
    inference_config: Optional[str] = _flag("infer stage: a JSON file of per-task settings (mode, width_mult_list, "
                                            "depth_mult, early_exit, exit_threshold), e.g. "
                                            "configs/best_tradeoff_inference_config.json; replaces the mode flags", None,
                                            group="inference", stages=("infer", "export"))
    width_mult: list[float] = _flag("export stage: width multiplier of each subnet to export; paired in order with "
                                    "--depth_mult (a single value pairs with every depth)", default_factory=list,
                                    group="export", stages=("export",))
    depth_mult: list[float] = _flag("export stage: depth multiplier of each subnet to export (see --width_mult)",
                                    default_factory=list, group="export", stages=("export",))
    format: str = _flag("export stage: paddle (Paddle Inference's format for this paddle) or onnx (that, plus "
                        "model.onnx for onnxruntime, checked against it)", "paddle", group="export", stages=("export",))
    record_cpu_time: bool = _flag("reference flag: latency is always measured, on the device in use", False,
                                  group="reference")
    record_gpu_time: bool = _flag("reference flag: latency is always measured, on the device in use", False,
                                  group="reference")
    do_eval: bool = _flag("reference flag: without --do_train and --stage, runs --stage infer", False,
                          group="reference")
    model_type: Optional[str] = _flag("reference flag: the model family; only bert is supported", None,
                                      group="reference")
    do_train: bool = _flag("reference flag: accepted so its command lines run; a training stage always trains", False,
                           group="reference")
    training_phase: Optional[str] = _flag("reference alias of --stage: " + ", ".join(TRAINING_PHASES),
                                          group="reference")
    resume: bool = _flag("continue an interrupted run from <output_dir>/checkpoint", False,
                         aliases=("--load_checkpoint",), group="training", stages=TRAINING)
    verbose: bool = _flag("show the libraries' log lines too (PaddleNLP's file loading and advice); also "
                          "OFA_FLEXBERT_VERBOSE=1", False, group="common")
    overwrite_output_dir: bool = _flag("let a new run replace what an earlier run left in --output_dir "
                                       "(refused otherwise)", False, group="common")
    device: Optional[str] = _flag("paddle device, e.g. cpu or gpu:0 (default: paddle's choice)", group="common")
    cpu: bool = _flag("reference flag: run on the CPU (the same as --device cpu)", False, group="common")
    evaluate_during_training: bool = _flag("reference flag: a training stage always evaluates every "
                                           "--logging_steps", False, group="reference")
    do_lower_case: Optional[bool] = _flag("reference flag: checked against the model's tokenizer (which decides)",
                                          group="common")
    num_workers: int = _flag("reference flag: data is tokenised once in-process; no loader workers", 0,
                             group="reference")
    hidden_dropout_prob: Optional[float] = _flag("reference flag: dropout comes from the model's config.json "
                                                 "(as in the reference, where it was unused too)", group="reference")
    attention_probs_dropout_prob: Optional[float] = _flag("reference flag: dropout comes from the model's "
                                                          "config.json (as in the reference)", group="reference")
    num_threads: int = _flag("CPU math threads (0 = one per core; paddle's own default is 1)", 0, group="common")

    chain: tuple[str, ...] = _flag("the stages of the --stage all run this stage belongs to (set by the chain)",
                                   default=(), group="internal")

    # ---- derived helpers -------------------------------------------------------------
    @property
    def total_steps_override(self) -> Optional[int]:
        return self.max_steps if self.max_steps and self.max_steps > 0 else None


FIELD_TYPES = get_type_hints(RunArgs)
FIELDS = {f.name: f for f in dataclasses.fields(RunArgs) if f.metadata["group"] != "internal"}  # the flags
FINGERPRINT = tuple(name for name, f in FIELDS.items() if f.metadata["fingerprint"])


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2 (our bad-input contract)."""

    def error(self, message: str):  # noqa: D401 -- argparse API
        raise UserError(f"{self.prog}: {message}")


def _parse_float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _parse_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunArgs field, in --help's sections; defaults are None so we can tell which flags were given."""
    sections = {key: parser.add_argument_group(title) for key, title in HELP_GROUPS.items() if title}
    for name, f in FIELDS.items():
        kind = FIELD_TYPES[name]
        names = [f"--{name}", *f.metadata["aliases"]]
        group = sections[f.metadata["group"]]
        if kind in (bool, Optional[bool]):
            group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f.metadata["help"])
        elif kind == list[float]:
            group.add_argument(*names, dest=name, type=_parse_float_list, default=None, metavar="W1,W2,...",
                                help=f.metadata["help"])
        elif kind == list[int]:
            group.add_argument(*names, dest=name, type=_parse_int_list, default=None, metavar="I1,I2,...",
                                help=f.metadata["help"])
        else:
            base = {int: int, float: float, Optional[int]: int, Optional[float]: float}.get(kind, str)
            group.add_argument(*names, dest=name, type=base, default=None, help=f.metadata["help"])


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert a YAML value to the field's type (YAML reads ``2e-5`` as a string)."""
    kind = FIELD_TYPES[name]
    try:
        if kind in (bool, Optional[bool]):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == list[float]:
            return _parse_float_list(",".join(map(str, value)) if isinstance(value, list) else value)
        if kind == list[int]:
            return _parse_int_list(",".join(map(str, value)) if isinstance(value, list) else value)
        if value is None and kind in (Optional[int], Optional[float]):
            return None
        kind_of_value = {Optional[int]: int, Optional[float]: float}.get(kind, kind)
        if kind_of_value in (int, float) and isinstance(value, bool):
            raise ValueError  # YAML's true is not 1
        if kind_of_value is int:
            return int(str(value))  # as on the command line: 2.5 and 2.0 are not integers
        if kind_of_value is float:
            return float(value)
        return None if value is None else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise UserError(f"{source}: '{name}: {value}' is not a valid {getattr(kind, '__name__', kind)}") from None


def load_yaml_defaults(path: str, stage: Optional[str]) -> dict[str, Any]:
    """Top-level keys of ``path``, overlaid with its ``stages: {stage: {...}}`` section.

    Every section is validated, whichever stage runs: a misspelt key or stage name in the depth
    section must fail the width run that precedes it, not surface hours later (or never).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of flag names to values")
    stages = data.pop("stages", {}) or {}
    if not isinstance(stages, dict):
        raise UserError(f"{path}: 'stages' must map stage names to settings")
    sections = {"": data}
    for name, section in stages.items():  # every section is checked, not only the running stage's
        if name not in STAGES:
            raise UserError(f"{path}: unknown stage 'stages.{name}' (expected one of {', '.join(STAGES)})")
        if section is not None and not isinstance(section, dict):
            raise UserError(f"{path}: 'stages.{name}' must map flag names to values")
        sections[name] = section or {}
    checked = {name: {key: _coerce_known(key, value, path) for key, value in section.items()}
               for name, section in sections.items()}
    return {**checked[""], **checked.get(stage, {})}


def _coerce_known(key: str, value: Any, path: str) -> Any:
    """:func:`_coerce` for a key that must be a flag name."""
    if key not in FIELDS:
        raise UserError(f"{path}: unknown key '{key}' (expected flag names such as learning_rate)")
    return _coerce(key, value, path)


def resolve(flags: dict[str, Any]) -> RunArgs:
    """Merge defaults, the task's YAML file and the given flags; validate the result."""
    given = {k: v for k, v in flags.items() if v is not None and k in FIELDS}
    if given.get("do_eval") and not given.get("do_train") and not given.get("stage") \
            and not given.get("training_phase"):  # the reference's train_gate.py --do_eval: inference
        given["stage"] = "infer"
    if given.get("training_phase") and not given.get("stage"):
        phase = given["training_phase"]
        if phase not in TRAINING_PHASES:
            raise UserError(f"--training_phase: unknown phase '{phase}'; expected one of: {', '.join(TRAINING_PHASES)}")
        given["stage"] = TRAINING_PHASES[phase]
    if not given.get("task"):
        raise UserError("--task is required (e.g. --task rte)")
    task = get_task(given["task"])
    config_path = given.get("config") or os.path.join(CONFIG_DIR, f"{task.name}.yaml")
    merged = load_yaml_defaults(config_path, given.get("stage"))
    merged.update(given)
    merged["task"] = task.name
    merged["config"] = config_path
    args = RunArgs(**merged)
    validate(args)
    return args


def validate(args: RunArgs) -> None:
    """Reject values no stage can run with, naming the flag."""
    if args.stage not in STAGES:
        raise UserError(f"--stage: expected one of {', '.join(STAGES)}, got '{args.stage}'")
    for name in ("width_mult_list", "depth_mult_list", "width_mult", "depth_mult"):
        values = getattr(args, name)
        if not values and name.endswith("_list"):
            raise UserError(f"--{name}: needs at least one value")
        for value in values:
            if not 0.0 < value <= 1.0:
                raise UserError(f"--{name}: {value:g} is outside (0, 1]")
    if args.model_type is not None and args.model_type.lower() != "bert":
        raise UserError(f"--model_type {args.model_type}: only bert is supported (BertForSequenceClassification)")
    if args.num_gates < 0:
        raise UserError(f"--num_gates: must be 0 (one per layer) or positive, got {args.num_gates}")
    if len(args.gate_setting) < 2 or args.gate_setting != sorted(set(args.gate_setting)) or \
            not all(0.0 < w <= 1.0 for w in args.gate_setting):
        raise UserError("--gate_setting: needs two or more increasing widths in (0, 1], got "
                        + ",".join(f"{w:g}" for w in args.gate_setting))
    if args.gate_class_weights and (len(args.gate_class_weights) != len(args.gate_setting)
                                    or any(not w >= 0 for w in args.gate_class_weights)):
        raise UserError(f"--gate_class_weights: needs one non-negative weight per --gate_setting width "
                        f"({len(args.gate_setting)}), got " + ",".join(f"{w:g}" for w in args.gate_class_weights))
    if args.gate_training not in GATE_TRAINING:
        raise UserError(f"--gate_training: expected one of {', '.join(GATE_TRAINING)}, got '{args.gate_training}'")
    if not 0.0 < args.gate_macs_target <= 1.0:
        raise UserError(f"--gate_macs_target: a share of the full model's MACs, in (0, 1], got {args.gate_macs_target:g}")
    if not args.gate_cost_weight >= 0:
        raise UserError(f"--gate_cost_weight: must not be negative, got {args.gate_cost_weight:g}")
    if not args.regression_tolerance >= 0:
        raise UserError(f"--regression_tolerance: must not be negative, got {args.regression_tolerance:g}")
    if not 0.0 < args.macs_budget <= 1.0:
        raise UserError(f"--macs_budget: a share of the full model's MACs, in (0, 1], got {args.macs_budget:g}")
    if any(not t > 0 for t in args.exit_thresholds):
        raise UserError("--exit_thresholds: each must be positive (an input leaves when its entropy is below it), "
                        "got " + ",".join(f"{t:g}" for t in args.exit_thresholds))
    if args.fixed_gate is not None and not 0.0 < args.fixed_gate <= 1.0:
        raise UserError(f"--fixed_gate: a width in (0, 1], got {args.fixed_gate:g}")
    if args.format not in EXPORT_FORMATS:
        raise UserError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}, got '{args.format}'")
    if args.depth_rule not in DEPTH_RULES:
        raise UserError(f"--depth_rule: expected one of {', '.join(DEPTH_RULES)}, got '{args.depth_rule}'")
    if args.pooling is not None and args.pooling not in POOLINGS:
        raise UserError(f"--pooling: expected one of {', '.join(POOLINGS)}, got '{args.pooling}'")
    if args.importance_data not in ("holdout", "dev"):
        raise UserError(f"--importance_data: expected holdout or dev, got '{args.importance_data}'")
    if not 0.0 < args.importance_holdout < 1.0:
        raise UserError(f"--importance_holdout: must be in (0, 1), got {args.importance_holdout:g}")
    if not 0.0 <= args.graft_alpha <= 1.0:
        raise UserError(f"--graft_alpha: must be in [0, 1], got {args.graft_alpha:g}")
    if not 0.0 < args.graft_fraction <= 0.5:
        raise UserError(f"--graft_fraction: must be in (0, 0.5] (receivers and donors are disjoint halves), "
                        f"got {args.graft_fraction:g}")
    if args.num_threads < 0:
        raise UserError(f"--num_threads: must be 0 (one per core) or positive, got {args.num_threads}")
    for name in ("max_seq_length", "per_gpu_train_batch_size", "per_gpu_eval_batch_size", "logging_steps",
                 "gradient_accumulation_steps"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name}: must be a positive integer, got {getattr(args, name)}")
    if not 0 < args.num_train_epochs < float("inf") and not args.total_steps_override:  # also catches nan
        raise UserError(f"--num_train_epochs: must be a positive number, got {args.num_train_epochs:g}")
    for name in ("learning_rate", "max_grad_norm", "adam_epsilon"):
        value = getattr(args, name)
        if not value > 0 or value == float("inf"):  # also catches nan
            raise UserError(f"--{name}: must be a positive number, got {value:g}")
    if args.warmup_steps < 0 or args.weight_decay < 0 or args.weight_decay != args.weight_decay:
        raise UserError(f"--warmup_steps/--weight_decay: must not be negative, got {args.warmup_steps}, "
                        f"{args.weight_decay:g}")


def task_data_dir(data_dir: Optional[str], dir_name: str) -> str:
    """``data_dir`` (--data_dir), or $GLUE_DIR/<TASK> (GLUE's folder name) when it is not given."""
    if data_dir:
        return data_dir
    glue = os.environ.get("GLUE_DIR")
    if glue:
        return os.path.join(glue, dir_name)
    raise UserError("--data_dir is required (or set GLUE_DIR to the folder holding RTE/, MRPC/, ...)")


def to_dict(args: RunArgs) -> dict[str, Any]:
    """JSON-ready copy of the flags (recorded in flexbert.json)."""
    return {name: value for name, value in dataclasses.asdict(args).items() if name in FIELDS}


# Flags the reference needs and we accept so its command lines run, but which change nothing here.
NO_EFFECT = {"model_type": "only BERT exists here", "do_train": "a training stage always trains",
             "record_cpu_time": "latency is always measured", "record_gpu_time": "latency is always measured",
             "evaluate_during_training": "a training stage always evaluates every --logging_steps",
             "num_workers": "data is tokenised once, in-process",
             "hidden_dropout_prob": "dropout comes from the model's config.json",
             "attention_probs_dropout_prob": "dropout comes from the model's config.json"}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, list):
        return " " + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f" {value:g}" if isinstance(value, float) else f" {value}"


def no_effect_notes(args: RunArgs) -> list[str]:
    """One line per accepted flag that changes nothing, for the stage to log (never silence)."""
    notes = []
    for name, why in NO_EFFECT.items():
        value = getattr(args, name)
        if value:
            notes.append(f"--{name}{_shown(value)}: accepted for the reference's command lines, no effect ({why})")
    defaults, running = RunArgs(), set(args.chain or (args.stage,))
    for name, f in FIELDS.items():  # flags a stage does not read: set to anything but their default, a line
        readers = f.metadata["stages"]
        value = getattr(args, name)
        if readers is None or running & set(readers) or value == getattr(defaults, name):
            continue
        who = f"the {args.stage} stage does not" if not args.chain else "no stage of --stage all does"
        notes.append(f"--{name}{_shown(value)}: {who} use it (no effect)")
    return notes
