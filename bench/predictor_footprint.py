#!/usr/bin/env python
"""What a predictor process costs before it answers: import time, load time, first answers, peak memory.

    python bench/predictor_footprint.py --exports OUT/w1_d1,SEG/wd_dynamic --texts dev.tsv --out RESULTS [--runs 5]
        [--runtime paddle|onnx] [--checkouts THIS,../old-checkout]

Each run is a fresh Python process (as a new server or batch job starts) that imports
``ofa_flexbert.deploy.predictor``, builds the ``Predictor`` for one export, and labels the first 32
lines of ``--texts``; it reports the seconds of each step, its peak resident memory
(``ru_maxrss``) and which of paddle / PaddleNLP / PaddleSlim / the training stages / the dygraph model
code it imported.  ``--checkouts``: the same exports run by the code of each checkout (to compare two
versions of the predictor in one run).  The (checkout, export) pairs take turns, ``--runs`` times;
medians are written to ``RESULTS/footprint.json`` and ``RESULTS/footprint.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchlib import ROOT, atomic_write

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import patches
from ofa_flexbert.deploy.predictor import Predictor
imported = time.perf_counter()
predictor = Predictor({export!r}, num_threads=1, onednn=False, runtime={runtime!r})
loaded = time.perf_counter()
texts = [line.split("\\t")[0] for line in open({texts!r}, encoding="utf-8").read().splitlines()[1:33]]
predictor.predict(texts)
answered = time.perf_counter()
watched = ("paddle", "paddlenlp", "paddleslim", "ofa_flexbert.app", "ofa_flexbert.train", "ofa_flexbert.engine.encoder", "gate.modules")
print(json.dumps({{"import_s": imported - start, "load_s": loaded - imported, "first_32_s": answered - loaded,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "imported": sorted(w for w in watched if any(m == w or m.startswith(w + ".") for m in sys.modules))}}))
"""


def one_run(export: str, texts: str, runtime, checkout: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(export=export, texts=texts, runtime=runtime)],
                          capture_output=True, text=True, cwd=checkout)
    if done.returncode != 0:
        raise SystemExit(f"{export}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", required=True, help="comma-separated export folders")
    parser.add_argument("--texts", required=True, help="a GLUE dev.tsv (header, text in the first column)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runtime", choices=("paddle", "onnx"), default=None,
                        help="the Predictor's runtime (default: the manifest's, else paddle)")
    parser.add_argument("--checkouts", default=ROOT, help="comma-separated checkouts whose code runs the exports")
    args = parser.parse_args()
    checkouts = [os.path.abspath(c) for c in args.checkouts.split(",")]
    pairs = [f"{c}::{e}" for c in checkouts for e in args.exports.split(",")]
    runs: dict[str, list[dict]] = {p: [] for p in pairs}
    for r in range(args.runs):
        for p in pairs[r % len(pairs):] + pairs[:r % len(pairs)]:
            checkout, export = p.split("::")
            runs[p].append(one_run(export, args.texts, args.runtime, checkout))
    keys = ("import_s", "load_s", "first_32_s", "peak_rss_mb")
    summary = {e: {**{k: float(np.median([x[k] for x in rs])) for k in keys}, "imported": rs[0]["imported"]}
               for e, rs in runs.items()}
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "footprint.json"), json.dumps({"runs": runs, "medians": summary}, indent=2) + "\n")
    lines = ["| checkout | export | import (s) | load (s) | first 32 (s) | peak RSS (MB) | imports |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {os.path.basename(e.split('::')[0])} | {os.path.basename(e.split('::')[1])} | {s['import_s']:.2f} | {s['load_s']:.2f} | {s['first_32_s']:.2f} | "
              f"{s['peak_rss_mb']:.0f} | {', '.join(s['imported']) or '-'} |" for e, s in summary.items()]
    atomic_write(os.path.join(args.out, "footprint.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
