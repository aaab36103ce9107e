"""``run_ofa_glue.py serve``: load an export, open the socket, run uvicorn until SIGTERM or Ctrl-C.

Everything that can be wrong with the flags or the export directory is found before the port is
opened (one-line error, exit 2).  The socket is bound here rather than by uvicorn so a port in use
is that same one-line error, and so ``--port 0`` (a free port, for tests) is known before the
startup line is printed.  uvicorn stops on SIGTERM the graceful way -- it stops accepting, answers
the requests in flight, then runs the app's shutdown (the batcher finishes its queue) -- and then
re-raises the signal to the handler it found; the handler installed here only notes it, so the
process exits 0 after a clean stop.
"""
from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from ofa_flexbert.errors import UserError

from .api import Limits, create_app


@dataclass(frozen=True)
class ServeOptions:
    """The ``serve`` flags."""

    export_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    num_threads: int = 1
    runtime: Optional[str] = None  # None: what the export names (onnx for INT8), else paddle
    onednn: bool = False  # as the CLI: served requests vary in length, oneDNN pays per new shape
    limits: Limits = field(default_factory=Limits)
    verbose: bool = False  # uvicorn's own log lines and an access line per request (resolved by the CLI)

    def check(self) -> None:
        """One-line errors for values no service could run with."""
        limits = self.limits
        for flag, value in (("--max_batch_size", limits.max_batch_size), ("--num_threads", self.num_threads),
                            ("--max_request_rows", limits.max_request_rows),
                            ("--max_request_bytes", limits.max_request_bytes)):
            if value <= 0:
                raise UserError(f"{flag}: expected a positive integer, got {value}")
        if limits.max_wait_ms < 0:
            raise UserError(f"--max_wait_ms: expected a number of milliseconds >= 0, got {limits.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port: expected 0..65535 (0: any free port), got {self.port}")


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port); a one-line error if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on connections of a socket
    # that says it is TCP; without it every response waits ~40 ms for the client's delayed ACK (measured:
    # GET /health took 44 ms on this machine, docs/benchmarks.md, Serving under load).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, before uvicorn's loop takes the socket over
    except OSError as exc:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock


def served_description(manifest: dict[str, Any], options: ServeOptions, address: str, runtime: str) -> dict[str, Any]:
    """How the model is served (``GET /metadata``'s ``serving``)."""
    limits = options.limits
    return {"address": address, "runtime": runtime, "num_threads": options.num_threads,
            "onednn": options.onednn, "max_batch_size": limits.max_batch_size, "max_wait_ms": limits.max_wait_ms,
            "max_request_rows": limits.max_request_rows, "max_request_bytes": limits.max_request_bytes}


def startup_line(manifest: dict[str, Any], options: ServeOptions, address: str, runtime: str) -> str:
    """The one line the service prints when it is ready."""
    kind = manifest.get("kind", "static")
    share = ""
    if manifest.get("dev_full_mean_macs"):
        share = f", {manifest['dev_mean_macs'] / manifest['dev_full_mean_macs']:.0%} of the full model's MACs on dev"
    threads = f"{options.num_threads} thread" + ("s" if options.num_threads > 1 else "")
    where = "Paddle Inference" + ("" if options.onednn else " (no oneDNN)") if runtime == "paddle" else "onnxruntime"
    if manifest.get("quantization"):
        where += f" ({manifest['quantization']['mode'].upper()})"
    return (f"serving {manifest['task']} {manifest.get('tag', '')} ({kind}{share}) at {address} on {where}, "
            f"{threads}; batches of up to {options.limits.max_batch_size} rows within {options.limits.max_wait_ms:g} ms")


class Service:
    """A ready service: the predictor loaded and warmed up, the socket bound, uvicorn configured."""

    def __init__(self, options: ServeOptions):
        import uvicorn

        from ofa_flexbert.deploy.predictor import Predictor

        options.check()
        self.options = options
        self.predictor = Predictor(options.export_dir, num_threads=options.num_threads, onednn=options.onednn,
                                   batch_size=options.limits.max_batch_size, runtime=options.runtime)
        self.predictor.predict(["warm up"], ["warm up"] if self.predictor.takes_pairs else None)  # kernels built now
        self.socket = listen(options.host, options.port)
        host, port = self.socket.getsockname()[:2]
        self.port = port
        self.address = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        manifest = self.predictor.manifest
        self.app = create_app(self.predictor, options.limits, served_description(manifest, options, self.address,
                                                                                     self.predictor.runtime))
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="info" if options.verbose else "warning",
                                                    access_log=options.verbose, lifespan="on"))
        self.line = startup_line(manifest, options, self.address, self.predictor.runtime)

    def run(self) -> None:
        """Serve until the server is told to exit (a signal, or ``server.should_exit`` from another thread)."""
        self.server.run(sockets=[self.socket])

    @property
    def metrics(self):
        return self.app.state.metrics


def serve(options: ServeOptions) -> int:
    """Run the service in this process until SIGTERM or Ctrl-C; 0 after a clean stop."""
    service = Service(options)
    print(service.line, flush=True)
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    answered = sum(service.metrics.requests.values())
    why = f" on {signal.Signals(received[0]).name}" if received else ""
    print(f"stopped{why} after {answered} request{'s' if answered != 1 else ''}", file=sys.stderr, flush=True)
    return 0
