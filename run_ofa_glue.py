#!/usr/bin/env python
"""ofa-flexbert command line: parse, dispatch, report.  The work happens in ofa_flexbert/.

    python run_ofa_glue.py --task rte --stage finetune --model_dir M --output_dir T
    python run_ofa_glue.py convert --hf_dir HF --output_dir M
    python run_ofa_glue.py --demo

Bad input ends in a one-line ``error: ...`` on stderr and exit code 2.
"""
from __future__ import annotations

import patches  # noqa: F401  -- first: zlib before paddle (see patches/__init__.py)

import argparse
import logging
import sys
from typing import Optional

from ofa_flexbert.config import OneLineParser, add_run_flags
from ofa_flexbert.errors import UserError


def stage_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run_ofa_glue.py", description="Train and run width/depth-flexible BERTs.",
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


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if argv[:1] == ["convert"]:
            ns = convert_parser().parse_args(argv[1:])
            from ofa_flexbert.models import convert_hf_checkpoint

            convert_hf_checkpoint(ns.hf_dir, ns.output_dir, num_labels=ns.num_labels)
            print(f"converted {ns.hf_dir} -> {ns.output_dir}")
            return 0
        ns = stage_parser().parse_args(argv)
        from ofa_flexbert.report import front_table, grid_table, results_table

        if ns.demo:
            from ofa_flexbert.demo import run_demo

            overrides = {k: v for k, v in vars(ns).items() if v is not None and k not in ("demo", "output_dir")}
            reports = run_demo(ns.output_dir or "demo_output", extra_flags=overrides)
        else:
            from ofa_flexbert.stages import run

            reports = run(vars(ns))
        from ofa_flexbert import distributed

        if distributed.is_main():  # under paddle.distributed.launch, one table, not one per process
            print(results_table(reports))
            for report in reports:
                if len({r.depth_mult for r in report.results}) > 1:
                    print("\n" + grid_table(report))
                if report.extra.get("front"):
                    print("\n" + front_table(report))
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    from ofa_flexbert.distributed import exit_process

    exit_process(main())
