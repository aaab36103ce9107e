#!/usr/bin/env python
"""Throughput and latency of `run_ofa_glue.py serve` under concurrent clients, micro-batching on and off.

    python bench/serve_load.py --task sst-2 --exports static=OUT/w0.5_d0.67,cascade=OUT/cascade --out DIR
    python bench/serve_load.py --task sst-2 --out DIR \
        --exports onednn=OUT/w0.5_d0.67@onednn,reference=OUT/w0.5_d0.67@reference,onnx=OUT/w0.5_d0.67@onnx

An export's runtime follows ``@``: ``onednn`` (Paddle Inference with oneDNN, the default), ``reference``
(Paddle Inference's reference kernels, ``--onednn off``) or ``onnx`` (onnxruntime; the export needs
``--format onnx``).

For every export and every ``--max_batch_sizes`` value one server runs (127.0.0.1, a free port, started
as a user starts it).  Then, ``--repeats`` times, for each number of ``--clients`` the servers take
turns (order rotating; ``--warmup`` unrecorded passes first): each client thread sends ``--requests`` requests of one dev sentence each on
its own keep-alive connection, one after another.  Bounded: a cell stops at ``--max_seconds``.
Per (export, batch size, clients): throughput (rows/s, median over repeats), p50/p95/p99 latency over
every request, failed requests, and the service's own mean batch size (/metrics).  Every server is
stopped with SIGTERM and must exit 0.  Writes DIR/serve_load.json and DIR/serve_load.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from benchlib import ROOT, atomic_write

import patches  # noqa: F401,E402  -- zlib before paddle

from ofa_flexbert.glue.data import get_task, read_split  # noqa: E402


RUNTIME_FLAGS = {"onednn": ["--runtime", "paddle", "--onednn", "on"],
                 "reference": ["--runtime", "paddle", "--onednn", "off"],
                 "onnx": ["--runtime", "onnx"]}


def parse_exports(spec: str) -> dict[str, tuple[str, str]]:
    """``name=DIR[@RUNTIME],...`` -> {name: (abs DIR, runtime)}."""
    exports = {}
    for item in spec.split(","):
        name, _, target = item.partition("=")
        path, _, runtime = target.partition("@")
        if not name or not path or (runtime or "onednn") not in RUNTIME_FLAGS:
            sys.exit(f"--exports: expected name=DIR[@{'|'.join(RUNTIME_FLAGS)}], got {item!r}")
        exports[name] = (os.path.abspath(path), runtime or "onednn")
    return exports


def start_server(export_dir: str, runtime: str, batch: int, args) -> tuple[subprocess.Popen, int, str]:
    cmd = [sys.executable, "run_ofa_glue.py", "serve", "--export_dir", export_dir, "--port", "0",
           "--max_batch_size", str(batch), "--max_wait_ms", str(args.max_wait_ms), "--num_threads",
           str(args.num_threads), *RUNTIME_FLAGS[runtime]]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("serving "):
        sys.exit(f"the server did not start: {' '.join(cmd)}\n{process.stderr.read()}")
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    return process, port, line


def client(port: int, texts: list[str], deadline: float, latencies: list, failures: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for text in texts:
        if time.monotonic() > deadline:
            return
        body = json.dumps({"texts": [text]})
        start = time.perf_counter()
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        (latencies if ok else failures).append(time.perf_counter() - start)
    connection.close()


def load(port: int, clients: int, texts: list[str], args) -> dict:
    latencies, failures = [], []
    deadline = time.monotonic() + args.max_seconds
    shares = [[texts[(c * args.requests + i) % len(texts)] for i in range(args.requests)] for c in range(clients)]
    threads = [threading.Thread(target=client, args=(port, share, deadline, latencies, failures)) for share in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {"rows": len(latencies), "failed": len(failures), "seconds": seconds,
            "throughput": len(latencies) / seconds, "latencies": latencies,
            "cut_short": len(latencies) + len(failures) < clients * args.requests}


def scrape(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--exports", required=True, help="name=DIR[@onednn|reference|onnx],... (default onednn)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--max_batch_sizes", default="1,32")
    parser.add_argument("--requests", type=int, default=30, help="requests per client per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_wait_ms", type=float, default=5.0)
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1,
                        help="unrecorded passes per cell before the repeats: a runtime's first sight of an input "
                             "shape is slow (oneDNN builds its kernels per shape), a long-running service has "
                             "seen them")
    parser.add_argument("--max_seconds", type=float, default=120.0, help="a cell stops sending after this")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    task = get_task(args.task)
    data_dir = args.data_dir or os.path.join(os.environ["GLUE_DIR"], task.dir_name)
    texts = [e.text_a for e in read_split(task, data_dir, task.dev_splits[0])]
    exports = parse_exports(args.exports)
    batches = [int(b) for b in args.max_batch_sizes.split(",")]
    servers = {}
    for name, (path, runtime) in exports.items():
        for batch in batches:
            servers[(name, batch)] = start_server(path, runtime, batch, args)
            print(servers[(name, batch)][2], flush=True)
    cells: dict = {}
    try:
        for repeat in range(-args.warmup, args.repeats):
            for clients in (int(c) for c in args.clients.split(",")):
                keys = list(servers)
                keys = keys[repeat % len(keys):] + keys[:repeat % len(keys)]
                for key in keys:
                    result = load(servers[key][1], clients, texts, args)
                    if repeat < 0:
                        print(f"warm-up {key[0]:8} batch {key[1]:3} clients {clients:3}: "
                              f"{result['throughput']:7.1f} rows/s, failed {result['failed']}", flush=True)
                        continue
                    cell = cells.setdefault((key[0], key[1], clients), {"throughput": [], "latencies": [],
                                                                        "failed": 0, "cut_short": False})
                    cell["throughput"].append(result["throughput"])
                    cell["latencies"] += result["latencies"]
                    cell["failed"] += result["failed"]
                    cell["cut_short"] |= result["cut_short"]
                    print(f"repeat {repeat} {key[0]:8} batch {key[1]:3} clients {clients:3}: "
                          f"{result['throughput']:7.1f} rows/s, failed {result['failed']}", flush=True)
        for (name, batch), (_, port, _) in servers.items():
            metrics = scrape(port)
            for key, cell in cells.items():
                if key[:2] == (name, batch):
                    cell["mean_batch_size"] = metrics.get("ofa_flexbert_mean_batch_size")
    finally:
        codes = {}
        for key, (process, _, _) in servers.items():
            process.send_signal(signal.SIGTERM)
            codes[key] = process.wait(60)
    rows = []
    for (name, batch, clients), cell in sorted(cells.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        q = np.quantile(cell["latencies"], [0.5, 0.95, 0.99]) * 1e3 if cell["latencies"] else [float("nan")] * 3
        rows.append({"export": name, "max_batch_size": batch, "clients": clients,
                     "throughput": float(np.median(cell["throughput"])), "throughputs": cell["throughput"],
                     "p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2]),
                     "requests": len(cell["latencies"]), "failed": cell["failed"], "cut_short": cell["cut_short"],
                     "mean_batch_size": cell.get("mean_batch_size")})
    summary = {"task": args.task, "exports": {k: {"export_dir": p, "runtime": r} for k, (p, r) in exports.items()},
               "settings": {k: v for k, v in vars(args).items() if k not in ("exports",)},
               "server_exit_codes": {f"{k[0]}/b{k[1]}": c for k, c in codes.items()},
               "machine": os.uname().nodename, "cpus": os.cpu_count(), "rows": rows}
    atomic_write(os.path.join(args.out, "serve_load.json"), json.dumps(summary, indent=2) + "\n")
    lines = [f"{args.task}: one dev sentence per request, {args.requests} requests per client, {args.repeats} "
             f"repeats after {args.warmup} unrecorded warm-up pass(es), --max_wait_ms {args.max_wait_ms:g}, "
             f"{args.num_threads} thread(s); runtimes: "
             f"{', '.join(f'{name} {runtime}' for name, (_, runtime) in exports.items())}; "
             "throughput is the median over repeats, latency quantiles over every request.", "",
             "| export | clients | max batch | rows/s | p50 ms | p95 ms | p99 ms | failed | mean batch (whole run) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['export']} | {r['clients']} | {r['max_batch_size']} | {r['throughput']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']}"
                     f"{' (cut short)' if r['cut_short'] else ''} | {r['mean_batch_size'] or 0:.1f} |")
    by = {(r["export"], r["max_batch_size"], r["clients"]): r for r in rows}
    lines.append("")
    for name in exports:
        top = max(int(c) for c in args.clients.split(","))
        if (name, max(batches), top) in by and (name, min(batches), top) in by:
            gain = by[(name, max(batches), top)]["throughput"] / by[(name, min(batches), top)]["throughput"]
            lines.append(f"- {name}, {top} clients: batch {max(batches)} gives {gain:.2f}x the throughput of batch "
                         f"{min(batches)} (p95 {by[(name, max(batches), top)]['p95_ms']:.0f} ms)")
    lines.append(f"- server exit codes after SIGTERM: {sorted(set(codes.values()))}")
    atomic_write(os.path.join(args.out, "serve_load.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
