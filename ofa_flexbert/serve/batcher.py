"""Micro-batching: rows of concurrent requests run as one batch on one worker thread.

The model is called from a single thread (a Paddle Inference predictor is not safe to share), and
the event loop does not await it: a request hands its rows over as :class:`Job` s and awaits their
futures (a runtime that holds the GIL still pauses the loop while it computes; docs/reference.md).  The worker takes the oldest job, then whatever else arrives until ``max_wait_ms`` after
that job was *submitted* (under load the queue is already full and nothing waits) or the batch
would pass ``max_batch_size`` rows.  A job that does not fit starts the next batch; a request
larger than ``max_batch_size`` is split into jobs up front.  Pure Python: no framework.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

# run(texts, pairs or None) -> one result per row, in order
BatchRunner = Callable[[list[str], Optional[list[str]]], Sequence[Any]]


@dataclass
class Job:
    """Some consecutive rows of one request and the future their results go to."""

    texts: list[str]
    pairs: Optional[list[str]]
    submitted: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)

    def __len__(self) -> int:
        return len(self.texts)


_STOP = object()


class MicroBatcher:
    """Runs :class:`Job` s through ``run`` in batches of at most ``max_batch_size`` rows.

    ``on_batch(rows, seconds)`` is told of every batch run (the service's metrics).  A batch whose
    ``run`` raises fails only its own jobs; the worker goes on with the next.
    """

    def __init__(self, run: BatchRunner, max_batch_size: int, max_wait_ms: float,
                 on_batch: Optional[Callable[[int, float], None]] = None):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_ms >= 0, got {max_batch_size}, {max_wait_ms}")
        self._run, self.max_batch_size, self.max_wait = run, max_batch_size, max_wait_ms / 1000.0
        self._on_batch = on_batch or (lambda rows, seconds: None)
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish every job already submitted, then end the worker."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def submit(self, texts: list[str], pairs: Optional[list[str]] = None) -> list[Future]:
        """Futures of the request's rows, one per chunk of at most ``max_batch_size`` rows, in order."""
        if self._thread is None:
            raise RuntimeError("the batcher is not running")
        jobs = []
        for start in range(0, len(texts), self.max_batch_size):
            stop = start + self.max_batch_size
            jobs.append(Job(texts[start:stop], None if pairs is None else pairs[start:stop]))
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    def _work(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            if first is _STOP:
                return
            batch, carry, stopping = self._gather(first)
            self._execute(batch)
            if stopping:
                if carry is not None:
                    self._execute([carry])
                self._drain()
                return

    def _gather(self, first: Job) -> tuple[list[Job], Optional[Job], bool]:
        """``first`` and the jobs that join it, the job that did not fit (it starts the next batch), and
        whether the stop mark was met."""
        batch, rows = [first], len(first)
        deadline = first.submitted + self.max_wait
        while rows < self.max_batch_size:
            wait = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, None, True
            if rows + len(job) > self.max_batch_size:
                return batch, job, False
            batch.append(job)
            rows += len(job)
        return batch, None, False

    def _drain(self) -> None:
        """Run what was queued behind the stop mark (nothing should be: the server stops accepting first)."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                self._execute([job])

    def _execute(self, batch: list[Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        pairs = None if batch[0].pairs is None else [p for job in batch for p in job.pairs]
        started = time.perf_counter()
        try:
            results = list(self._run(texts, pairs))
        except Exception as exc:  # the model failed on this batch: its requests get 500, the service goes on
            for job in batch:
                job.future.set_exception(exc)
            return
        self._on_batch(len(texts), time.perf_counter() - started)
        start = 0
        for job in batch:
            job.future.set_result(results[start:start + len(job)])
            start += len(job)
