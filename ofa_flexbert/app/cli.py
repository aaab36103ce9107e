"""ofa-flexbert command line: parse, dispatch, report.  ``run_ofa_glue.py`` (the user's command, the
reference's name) and the ``ofa-flexbert`` console script both call :func:`main`.

    python run_ofa_glue.py --task rte --stage finetune --model_dir M --output_dir T
    python run_ofa_glue.py convert --hf_dir HF --output_dir M
    python run_ofa_glue.py predict --export_dir OUT/w0.5_d0.75 --input sentences.tsv
    python run_ofa_glue.py serve --export_dir OUT/w0.5_d0.75 --port 8080
    python run_ofa_glue.py --demo

Bad input ends in a one-line ``error: ...`` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from ofa_flexbert.app.console import configure_console, quiet_libraries
from ofa_flexbert.config import OneLineParser, add_run_flags
from ofa_flexbert.errors import UserError


def stage_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run_ofa_glue.py", description="Train and run width/depth-flexible BERTs.",
                           usage="%(prog)s --task TASK --stage STAGE --model_dir M --output_dir O [flags]\n"
                                 "       %(prog)s --demo | convert --help | predict --help | serve --help",
                           epilog="Import a HuggingFace checkpoint first: run_ofa_glue.py convert --help")
    parser.add_argument("--demo", action="store_true",
                        help="run every implemented stage on a synthetic task and a tiny BERT (offline, minutes)")
    add_run_flags(parser)
    return parser


def convert_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run_ofa_glue.py convert",
                           description="Import a HuggingFace BERT checkpoint into a Paddle model directory.")
    parser.add_argument("--hf_dir", required=True, help="folder with config.json, model.safetensors or "
                        "pytorch_model.bin, vocab.txt (never written to)")
    parser.add_argument("--output_dir", required=True, help="the Paddle model directory to write")
    parser.add_argument("--num_labels", type=int, default=2, help="classifier size (1 for STS-B)")
    return parser


def predict_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run_ofa_glue.py predict",
                           description="Label raw text with a subnet written by --stage export (Paddle Inference).")
    parser.add_argument("--export_dir", required=True, help="one subnet's folder written by --stage export")
    parser.add_argument("--input", required=True, help="a TSV file (one text, or two tab-separated texts for a "
                        "sentence-pair task, per line; no header) or JSON lines (.jsonl: {\"text\": ..., "
                        "\"text_pair\": ...})")
    parser.add_argument("--batch_size", type=int, default=32, help="inputs per Paddle Inference run")
    parser.add_argument("--num_threads", type=int, default=1, help="CPU math threads")
    parser.add_argument("--onednn", choices=("on", "off"), default="on", help="Paddle Inference's oneDNN kernels "
                        "(on: the CPU build's default and usually much faster)")
    parser.add_argument("--runtime", choices=("paddle", "onnx"), default=None, help="Paddle Inference, or "
                        "onnxruntime on the model.onnx of an export with --format onnx (default: onnx for an INT8 "
                        "export, else paddle)")
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run_ofa_glue.py serve",
                           description="Serve a model written by --stage export over HTTP (FastAPI + uvicorn): "
                                       "POST /predict, GET /health, /metadata, /metrics.")
    parser.add_argument("--export_dir", required=True, help="a folder written by --stage export (static, "
                        "dynamic or cascade)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    parser.add_argument("--max_batch_size", type=int, default=32, help="most input rows run as one batch; "
                        "concurrent requests are merged up to it")
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="how long a request's rows wait for "
                        "others to join their batch")
    parser.add_argument("--max_request_rows", type=int, default=256, help="most inputs one request may send (413)")
    parser.add_argument("--max_request_bytes", type=int, default=1 << 20, help="largest request body (413)")
    parser.add_argument("--num_threads", type=int, default=1, help="CPU math threads of the runtime")
    parser.add_argument("--onednn", choices=("on", "off"), default="off", help="Paddle Inference's oneDNN kernels "
                        "(off by default here: on requests of varying length oneDNN builds kernels per input shape "
                        "and served 0.7x the rows/s of the reference kernels; docs/benchmarks.md, Serving under load)")
    parser.add_argument("--runtime", choices=("paddle", "onnx"), default=None, help="Paddle Inference, or "
                        "onnxruntime on the model.onnx of an export with --format onnx (default: onnx for an INT8 "
                        "export, else paddle)")
    parser.add_argument("--verbose", action="store_true", help="uvicorn's and PaddleNLP's own log lines, "
                        "one access line per request")
    return parser


def run_serve(argv: list[str]) -> int:
    """``serve``: until SIGTERM or Ctrl-C."""
    ns = serve_parser().parse_args(argv)
    from ofa_flexbert.app.console import verbose_requested
    from ofa_flexbert.serve.api import Limits
    from ofa_flexbert.serve.server import ServeOptions, serve

    quiet_libraries(ns.verbose, loaded_only=True)
    limits = Limits(ns.max_batch_size, ns.max_wait_ms, ns.max_request_rows, ns.max_request_bytes)
    return serve(ServeOptions(ns.export_dir, ns.host, ns.port, ns.num_threads, ns.runtime, ns.onednn == "on",
                              limits, verbose_requested(ns.verbose)))


def run_predict(argv: list[str]) -> int:
    """``predict``: one line per input -- index, label, then each label's probability (or the score)."""
    ns = predict_parser().parse_args(argv)
    if ns.batch_size <= 0 or ns.num_threads <= 0:
        raise UserError("--batch_size and --num_threads: must be positive integers")
    from ofa_flexbert.deploy.predictor import Predictor, read_inputs

    predictor = Predictor(ns.export_dir, num_threads=ns.num_threads, onednn=ns.onednn == "on",
                          batch_size=ns.batch_size, runtime=ns.runtime)
    quiet_libraries(False, loaded_only=True)  # a per-layer dynamic export's dygraph model imports PaddleNLP
    texts, pairs = read_inputs(ns.input, predictor.takes_pairs)
    labels = predictor.task.labels
    logits, routes = predictor.run(texts, pairs)
    route_columns = ["layers", "heads", "MACs"] if routes else []  # a dynamic export: each input's own route
    print("\t".join(["index", "label"] + ([f"p({label})" for label in labels] if labels else []) + route_columns))
    for i, prediction in enumerate(predictor.predictions(logits, routes)):
        cells = [str(i)] + ([f"{prediction.label:.4f}"] if prediction.probabilities is None else
                            [prediction.label] + [f"{p:.4f}" for p in prediction.probabilities.values()])
        if prediction.route is not None:
            steps = prediction.route.executed
            cells += [str(len(steps)), ",".join(str(w.heads) for _, w in steps), str(prediction.macs)]
        print("\t".join(cells))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_console()
    try:
        if argv[:1] == ["convert"]:
            ns = convert_parser().parse_args(argv[1:])
            from ofa_flexbert.store.hf_import import convert_hf_checkpoint

            quiet_libraries(False)  # PaddleNLP's "saved in" lines, unless OFA_FLEXBERT_VERBOSE

            convert_hf_checkpoint(ns.hf_dir, ns.output_dir, num_labels=ns.num_labels)
            print(f"converted {ns.hf_dir} -> {ns.output_dir}")
            return 0
        if argv[:1] == ["predict"]:
            return run_predict(argv[1:])
        if argv[:1] == ["serve"]:
            return run_serve(argv[1:])
        ns = stage_parser().parse_args(argv)
        from ofa_flexbert.app.report import results_table

        if ns.demo:
            from ofa_flexbert.app.demo import run_demo

            overrides = {k: v for k, v in vars(ns).items() if v is not None and k not in ("demo", "output_dir")}
            reports = run_demo(ns.output_dir or "demo_output", extra_flags=overrides)
        else:
            from ofa_flexbert.app.stages import run

            reports = run(vars(ns))
        from ofa_flexbert.train import distributed

        if distributed.is_main():  # under paddle.distributed.launch, one table, not one per process
            table = results_table(reports)
            if table:
                print(table)
            for report in reports:
                for report_table in report.tables():
                    print("\n" + report_table)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code



def entry() -> None:
    """The console script: exit the way a launched worker must (:func:`distributed.exit_process`) when a
    stage ran; ``predict`` and ``serve`` never load the training code (nor paddle, on onnxruntime)."""
    code = main()
    if "ofa_flexbert.train.distributed" in sys.modules:  # a stage ran, maybe as a launched rank
        from ofa_flexbert.train.distributed import exit_process

        exit_process(code)
    sys.exit(code)
