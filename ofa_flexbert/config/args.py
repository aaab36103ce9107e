"""The run configuration: :class:`RunArgs`, one dataclass field per flag, each with its facts.

Why this shape: every stage reads the same :class:`RunArgs`, so a hyper-parameter has one name
everywhere (the Flexible-BERT reference's flag names, so its users can port their scripts), one
default, and one place where its facts live: its help, its --help section, the stages that read it
and whether it is part of the resume fingerprint (:func:`_flag`).  Pure: no framework.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, get_type_hints

from ofa_flexbert.errors import UserError

EXPORT_FORMATS = ("paddle", "onnx")
QUANTIZE_MODES = ("none", "int8")  # --quantize (deploy/quantize.py)
DYNAMIC_GRAPHS = ("segments", "layers")  # --dynamic_graphs: how a gated / early-exit export is cut (deploy/segments.py)
GATE_TRAINING = ("targets", "routes")  # what --stage gate trains the gates on (stages/gate.py)
GATE_TARGETS = ("correct", "agree")  # an input's target width (gate/targets.py)
GATE_INPUTS = ("pooled", "pooled+probe")  # what each gate reads (gate/modules.py)
GATE_FEATURES = ("all_widths", "target")  # the features target training shows each gate (stages/gate_targets.py)
COSTS = ("macs", "latency")  # what --stage search ranks settings by (adaptive/latency.py)
STAGES = ("finetune", "width", "depth", "final", "gate", "infer", "search", "export", "profile", "all")
# The reference's --training_phase values, mapped to our stages.  Its "finetuning" phase
# runs the final-fine-tuning code path (docs/reference.md, Final fine-tuning), so it maps to "final".
TRAINING_PHASES = {"dynabertw": "width", "dynabert": "depth", "final_finetuning": "final", "finetuning": "final",
                   "traingate": "gate"}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


TRAINING = ("finetune", "width", "depth", "final", "gate")  # the stages that train, and read the training flags
# --help's sections, in order: each flag's ``group``.
HELP_GROUPS = {"common": "common", "training": "training (every stage that trains)",
               "subnets": "subnets (widths, depths, the supernet)", "width": "width stage", "depth": "depth and final stages",
               "gates": "gate stage", "inference": "inference (--stage infer, search, export)", "export": "export stage",
               "profile": "profile stage (the latency model)",
               "reference": "the reference implementation's flags", "internal": None}


def _flag(help: str, default: Any = None, aliases: tuple[str, ...] = (), group: str = "common",
          stages: Optional[tuple[str, ...]] = None, fingerprint: bool = False, **extra) -> Any:
    """A dataclass field that also describes its command-line flag and the facts the code derives from it.

    ``group``: its section of --help; ``stages``: the stages that read it (None: every stage) -- given
    to another stage it gets a "no effect" line; ``fingerprint``: part of the resume fingerprint (a
    resumed run must agree on it to end where the uninterrupted run ends); ``legacy``: for a
    fingerprinted flag added with a default that changes behaviour, what checkpoints written before
    it existed ran with (:data:`UNRECORDED`).
    """
    assert group in HELP_GROUPS, group
    factory = extra.pop("default_factory", None)
    meta = {"help": help, "aliases": aliases, "group": group, "stages": stages, "fingerprint": fingerprint,
            "legacy": extra.pop("legacy", None)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# Long by nature: one field per flag (about 80), each with its facts; nothing else lives in the class.
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
                                         group="subnets", stages=("width", "depth", "final", "gate", "infer", "search", "profile"),
                                         fingerprint=True)
    depth_mult_list: list[float] = _flag("depth multipliers, each in (0, 1]", default_factory=lambda: [1.0],
                                         group="subnets", stages=("depth", "final", "infer", "search", "profile"),
                                         fingerprint=True)
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
    gate_target: str = _flag("gate stage: an input's target class: correct (the reference: the smallest width that "
                             "gets it right, else the widest) or agree (the smallest width whose prediction "
                             "agrees with the widest --gate_setting width's: the default, measured best on MRPC and SST-2; "
                             "docs/decisions.md)", "agree",
                             group="gates", stages=("gate",), fingerprint=True, legacy="correct")
    gate_features: str = _flag("gate stage, --gate_training targets: what each gate trains on: all_widths (every "
                               "input's features at every --gate_setting width, each with the input's target: the "
                               "width tells nothing) or target (the reference: only at its target's width, which "
                               "gives the target away; docs/decisions.md)", "all_widths",
                               group="gates", stages=("gate",), fingerprint=True, legacy="target")
    gate_inputs: str = _flag("gate stage: what each gate reads: pooled (the pooled vector of the layer it follows) or "
                             "pooled+probe (also what a frozen copy of the final head predicts from it: class "
                             "probabilities and entropy, early exit's signal; classification tasks)", "pooled",
                             group="gates", stages=("gate",), fingerprint=True)
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
    cascade: list[float] = _flag("infer stage: a confidence cascade: static subnets of these widths run in turn, "
                                 "cheapest first; an input stops at the first whose prediction entropy is below "
                                 "its --cascade_thresholds value", default_factory=list,
                                 group="inference", stages=("infer",))
    cascade_depths: list[float] = _flag("infer stage, with --cascade: each subnet's depth (default 1 for each)",
                                        default_factory=list, group="inference", stages=("infer",))
    cascade_thresholds: list[float] = _flag("infer stage, with --cascade: the entropy (natural log; strict <; see "
                                            "--normalized_entropy) below which an input stops after each subnet "
                                            "but the last; one value serves every subnet", default_factory=list,
                                            group="inference", stages=("infer",))
    fixed_gate: Optional[float] = _flag("infer stage, with --w_dynamic/--wd_dynamic: every block runs at this width "
                                        "instead of the gates' choice (the gates do not run; an ablation; the "
                                        "reference's flag, which crashes there)", None,
                                        group="inference", stages=("infer",))
    gate_threshold: Optional[float] = _flag("infer stage, with --w_dynamic/--wd_dynamic: a gate picks the narrowest "
                                            "width whose cumulative softmax P(that width is enough) reaches this "
                                            "value, instead of its argmax (lower: cheaper)", None,
                                            group="inference", stages=("infer",))
    gate_thresholds: list[float] = _flag("search stage: gate thresholds to try with the gates' own class widths "
                                         "(one pass each; see --gate_threshold; empty: argmax only)",
                                         default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                         group="inference", stages=("search",))
    early_exit: bool = _flag("infer stage: check the off-ramps; leave when the entropy < --exit_threshold", False,
                             group="inference", stages=("infer",))
    exit_threshold: float = _flag("infer stage: early-exit entropy threshold (natural log; strict <)", 0.57,
                                  group="inference", stages=("infer",))
    normalized_entropy: bool = _flag("infer stage: divide the exit (and cascade) entropy by ln(classes)", False,
                                     group="inference", stages=("infer", "search"))
    exit_thresholds: list[float] = _flag("search stage: exit thresholds to try (units of --exit_threshold; "
                                         "default: 40 evenly spaced up to the largest entropy)", default_factory=list,
                                         group="inference", stages=("search",))
    macs_budget: float = _flag("search stage: the best setting costing at most this share of the full model's "
                               "MACs is written as inference_config.json", 0.5, group="inference", stages=("search",))
    cost: str = _flag("search stage: what settings are ranked and chosen by: macs (analytic) or latency (milliseconds "
                      "per input predicted from --cost_table, at --latency_batch_size)", "macs",
                      group="inference", stages=("search",))
    cost_table: Optional[str] = _flag("search stage: the cost_table.json --stage profile measured (--cost latency "
                                      "needs it; without --cost latency the rows still get predicted milliseconds)",
                                      None, group="inference", stages=("search",))
    int8_cost_table: Optional[str] = _flag("search stage, --quantize int8: the cost_table.json of --stage profile "
                                           "--quantize int8, which prices the INT8 subnets (the float settings keep "
                                           "--cost_table)", None, group="inference", stages=("search",))
    latency_budget: str = _flag("search stage, --cost latency: the best setting under this share of the full model's "
                                "predicted latency (e.g. 0.4) or milliseconds per input (e.g. 12ms) is written as "
                                "inference_config.json", "0.5", group="inference", stages=("search",))
    latency_batch_size: int = _flag("search stage: rows per predictor call the latency is predicted for (the "
                                    "predictor's --batch_size; inputs grouped by length as it groups them)", 1,
                                    group="inference", stages=("search",))
    profile_batch_sizes: list[int] = _flag("profile stage: batch sizes to time each probe graph at",
                                           default_factory=lambda: [1, 2, 4, 8, 16, 32], group="profile",
                                           stages=("profile",))
    profile_lengths: list[int] = _flag("profile stage: sequence lengths to time each probe graph at (at most "
                                       "--max_seq_length)", default_factory=lambda: [8, 16, 32, 64, 128],
                                       group="profile", stages=("profile",))
    profile_repeats: int = _flag("profile stage: timed calls per probe and shape, over three passes of the grid "
                                 "(the median is kept)", 9,
                                 group="profile", stages=("profile",))
    runtime: str = _flag("profile stage: the runtime the probe graphs are timed on: paddle (Paddle Inference) or "
                         "onnx (onnxruntime, their ONNX form; what --format onnx exports run on)", "paddle",
                         group="profile", stages=("profile",))
    onednn: str = _flag("profile stage: time Paddle Inference's reference kernels (off, what serve uses; the table "
                        "predicts them within a few percent) or oneDNN (on, what predict uses; its table under-"
                        "predicts batches of changing shapes by a fifth to two thirds: docs/benchmarks.md)", "off",
                        group="profile", stages=("profile",))
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
    quantize: str = _flag("export stage: int8 also writes <tag>_int8/, the subnet's ONNX model quantized by "
                          "onnxruntime (INT8 weights, dynamic activations), checked on dev against the float "
                          "subnet; implies --format onnx. profile stage: the probes quantized the same way and timed "
                          "on onnxruntime (a table for --int8_cost_table). search stage: every static subnet's INT8 "
                          "form joins the search, priced by --int8_cost_table", "none", group="export",
                          stages=("export", "profile", "search"))
    dynamic_graphs: str = _flag("export stage, gated or early-exit settings: segments (one graph per run of layers "
                                "between two decisions, at each width, with the gate and exit heads inside; numpy "
                                "between them) or layers (one graph per layer and width, the decisions in dygraph: "
                                "the earlier form)", "segments", group="export", stages=("export",))
    quant_tolerance: float = _flag("export stage: most points of the primary dev metric the INT8 model may lose "
                                   "against the float subnet before the export is refused", 1.0, group="export",
                                   stages=("export",))
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
# What a checkpoint that does not record a fingerprinted flag ran with: the flag's legacy value, else its default.
UNRECORDED = {name: f.metadata["legacy"] if f.metadata["legacy"] is not None
              else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
              for name, f in FIELDS.items() if f.metadata["fingerprint"]}


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
