"""The micro-batcher alone (no model, no HTTP): what goes into a batch, and what a failing batch takes down."""
import threading
import time

import pytest

from ofa_flexbert.serve.batcher import MicroBatcher


class Recorder:
    """A batch runner that records each batch's texts and answers each text with its upper case."""

    def __init__(self, fail_on=None, delay=0.0):
        self.batches, self.fail_on, self.delay = [], fail_on, delay

    def __call__(self, texts, pairs):
        self.batches.append(list(texts))
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise RuntimeError(f"cannot run {self.fail_on}")
        return [t.upper() + ("|" + p if p else "") for t, p in zip(texts, pairs or [None] * len(texts))]


def results(futures, timeout=5):
    return [r for f in futures for r in f.result(timeout=timeout)]


def test_requests_that_arrive_within_the_wait_share_a_batch_and_get_their_own_rows_back():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_ms=300)
    batcher.start()
    a, b, c = batcher.submit(["a", "b"]), batcher.submit(["c"]), batcher.submit(["d", "e", "f"])
    assert (results(a), results(b), results(c)) == (["A", "B"], ["C"], ["D", "E", "F"])
    batcher.stop()
    assert run.batches == [["a", "b", "c", "d", "e", "f"]]


def test_no_batch_passes_max_batch_size_and_a_large_request_is_split_in_order():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=3, max_wait_ms=200)
    batcher.start()
    big, small = batcher.submit([str(i) for i in range(7)]), batcher.submit(["x", "y", "z"])
    assert results(big) == [str(i) for i in range(7)] and results(small) == ["X", "Y", "Z"]
    batcher.stop()
    assert run.batches == [["0", "1", "2"], ["3", "4", "5"], ["6"], ["x", "y", "z"]]  # x, y, z do not fit beside 6


def test_pairs_travel_with_their_texts():
    batcher = MicroBatcher(Recorder(), max_batch_size=4, max_wait_ms=100)
    batcher.start()
    assert results(batcher.submit(["a", "b"], ["p", "q"])) == ["A|p", "B|q"]
    batcher.stop()


def test_a_failing_batch_fails_its_own_requests_only():
    run = Recorder(fail_on="boom")
    batcher = MicroBatcher(run, max_batch_size=2, max_wait_ms=100)
    batcher.start()
    bad = batcher.submit(["boom", "x"])
    with pytest.raises(RuntimeError, match="cannot run boom"):
        results(bad)
    assert results(batcher.submit(["ok"])) == ["OK"]
    batcher.stop()


def test_the_wait_counts_from_submission_so_a_busy_worker_adds_no_wait():
    """While the worker runs a slow batch, later requests queue up; once it is free they run at once, together,
    although the wait (2 s) is far longer than the test."""
    run = Recorder(delay=0.3)
    batcher = MicroBatcher(run, max_batch_size=2, max_wait_ms=0)
    batcher.start()
    first = batcher.submit(["a"])
    time.sleep(0.05)
    batcher.max_wait = 2.0
    later = [batcher.submit([t]) for t in "bc"]
    started = time.monotonic()
    results(first), [results(f) for f in later]
    assert time.monotonic() - started < 1.5  # not 0.3 + 2 s: b and c had waited since submission
    batcher.stop()
    assert run.batches[0] == ["a"] and sorted(sum(run.batches[1:], [])) == ["b", "c"]


def test_stop_answers_every_request_already_submitted():
    run = Recorder(delay=0.05)
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_ms=0)
    batcher.start()
    futures = [batcher.submit([t]) for t in "abcd"]
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    stopper.join(5)
    assert [results(f, timeout=0) for f in futures] == [["A"], ["B"], ["C"], ["D"]]


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        MicroBatcher(Recorder(), max_batch_size=0, max_wait_ms=1)
