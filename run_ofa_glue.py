#!/usr/bin/env python
"""ofa-flexbert command line (the reference implementation's script name; its command lines run here).

    python run_ofa_glue.py --task rte --stage finetune --model_dir M --output_dir T
    python run_ofa_glue.py convert --hf_dir HF --output_dir M
    python run_ofa_glue.py predict --export_dir OUT/w0.5_d0.75 --input sentences.tsv
    python run_ofa_glue.py --demo

The parsers and dispatch live in ``ofa_flexbert/app/cli.py``.
"""
import patches  # noqa: F401  -- first: zlib before paddle (see patches/__init__.py)

from ofa_flexbert.app.cli import entry, main  # noqa: E402,F401  -- main: for scripts that import this file

if __name__ == "__main__":
    entry()
