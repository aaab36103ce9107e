"""Checks of a resolved run: values no stage can run with (one-line errors naming the flag), and
accepted flags that change nothing (one log line each, never silence)."""
from __future__ import annotations

from typing import Any, Optional

from ofa_flexbert.engine.routes import DEPTH_RULES, POOLINGS
from ofa_flexbert.errors import UserError

from .args import COSTS, DYNAMIC_GRAPHS, EXPORT_FORMATS, FIELDS, QUANTIZE_MODES, GATE_FEATURES, GATE_INPUTS, GATE_TARGETS, GATE_TRAINING, STAGES, RunArgs


def parse_budget(text: str) -> tuple[float, bool]:
    """``--latency_budget``: ``"0.4"`` (a share of the full model's predicted latency, in (0, 1]) or ``"12ms"``
    (milliseconds per input); returns (value, in milliseconds)."""
    raw = str(text).strip().lower()
    in_ms = raw.endswith("ms")
    try:
        value = float(raw[:-2] if in_ms else raw)
    except ValueError:
        raise UserError(f"--latency_budget: expected a share of the full model's latency (e.g. 0.4) or "
                        f"milliseconds per input (e.g. 12ms), got '{text}'") from None
    if not value > 0 or value == float("inf") or (not in_ms and value > 1):
        raise UserError(f"--latency_budget: {'milliseconds must be positive' if in_ms else 'a share must be in (0, 1]'}, "
                        f"got '{text}'")
    return value, in_ms


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
    if args.gate_target not in GATE_TARGETS:
        raise UserError(f"--gate_target: expected one of {', '.join(GATE_TARGETS)}, got '{args.gate_target}'")
    if args.gate_inputs not in GATE_INPUTS:
        raise UserError(f"--gate_inputs: expected one of {', '.join(GATE_INPUTS)}, got '{args.gate_inputs}'")
    if args.gate_features not in GATE_FEATURES:
        raise UserError(f"--gate_features: expected one of {', '.join(GATE_FEATURES)}, got '{args.gate_features}'")
    if not 0.0 < args.gate_macs_target <= 1.0:
        raise UserError(f"--gate_macs_target: a share of the full model's MACs, in (0, 1], got {args.gate_macs_target:g}")
    if not args.gate_cost_weight >= 0:
        raise UserError(f"--gate_cost_weight: must not be negative, got {args.gate_cost_weight:g}")
    if not args.regression_tolerance >= 0:
        raise UserError(f"--regression_tolerance: must not be negative, got {args.regression_tolerance:g}")
    if not 0.0 < args.macs_budget <= 1.0:
        raise UserError(f"--macs_budget: a share of the full model's MACs, in (0, 1], got {args.macs_budget:g}")
    if args.cost not in COSTS:
        raise UserError(f"--cost: expected one of {', '.join(COSTS)}, got '{args.cost}'")
    if args.stage == "search" and args.cost == "latency" and not args.cost_table:
        raise UserError("--cost latency: needs --cost_table (the cost_table.json written by --stage profile)")
    if args.stage == "search" and args.quantize == "int8" and (args.cost != "latency" or not args.int8_cost_table):
        raise UserError("--quantize int8: the search prices INT8 subnets by time, not MACs (they have their float "
                        "twins' MACs); give --cost latency, --cost_table and --int8_cost_table (--stage profile "
                        "--quantize int8)")
    if args.stage == "search" and args.int8_cost_table and args.quantize != "int8":
        raise UserError("--int8_cost_table: prices the INT8 subnets that only --quantize int8 adds to the search")
    parse_budget(args.latency_budget)
    if args.runtime not in EXPORT_FORMATS:
        raise UserError(f"--runtime: expected one of {', '.join(EXPORT_FORMATS)}, got '{args.runtime}'")
    if args.onednn not in ("on", "off"):
        raise UserError(f"--onednn: expected on or off, got '{args.onednn}'")
    for name in ("latency_batch_size", "profile_repeats"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name}: must be a positive integer, got {getattr(args, name)}")
    for name in ("profile_batch_sizes", "profile_lengths"):
        values = getattr(args, name)
        if not values or any(v <= 0 for v in values):
            raise UserError(f"--{name}: needs positive integers, got " + ",".join(map(str, values)))
    if args.stage == "profile" and len(set(args.profile_batch_sizes)) * len(set(args.profile_lengths)) < 3:
        raise UserError("--profile_batch_sizes/--profile_lengths: a latency fit needs at least three shapes")
    if any(not t > 0 for t in args.exit_thresholds):
        raise UserError("--exit_thresholds: each must be positive (an input leaves when its entropy is below it), "
                        "got " + ",".join(f"{t:g}" for t in args.exit_thresholds))
    for flag, values in (("--gate_threshold", [args.gate_threshold]), ("--gate_thresholds", args.gate_thresholds)):
        for value in values:
            try:
                check_gate_threshold(value, flag)
            except ValueError as exc:
                raise UserError(str(exc)) from None
    if args.fixed_gate is not None and not 0.0 < args.fixed_gate <= 1.0:
        raise UserError(f"--fixed_gate: a width in (0, 1], got {args.fixed_gate:g}")
    if args.format not in EXPORT_FORMATS:
        raise UserError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}, got '{args.format}'")
    if args.quantize not in QUANTIZE_MODES:
        raise UserError(f"--quantize: expected one of {', '.join(QUANTIZE_MODES)}, got '{args.quantize}'")
    if args.dynamic_graphs not in DYNAMIC_GRAPHS:
        raise UserError(f"--dynamic_graphs: expected one of {', '.join(DYNAMIC_GRAPHS)}, got '{args.dynamic_graphs}'")
    if not args.quant_tolerance >= 0:
        raise UserError(f"--quant_tolerance: points of the primary metric, must not be negative, got "
                        f"{args.quant_tolerance:g}")
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


def check_gate_threshold(threshold: Optional[float], flag: str = "--gate_threshold") -> None:
    """A gate threshold (``gate.settings.choose_classes``) is a cumulative probability in (0, 1]; None: the
    argmax.  Here, below the gates, because the flags and an inference setting's ``Plan`` both check it."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"{flag}: a cumulative probability in (0, 1], got {threshold:g}")


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
