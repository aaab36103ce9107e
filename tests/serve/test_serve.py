"""`run_ofa_glue.py serve` on tiny exports made by hand: /predict is the Predictor, concurrent requests share
batches without changing any row's answer, every bad request gets its 4xx (and the service goes on), a model
error is a 500, and a bad export or flag stops it before the port is opened."""
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, hand_export
from ofa_flexbert.app.cli import main
from ofa_flexbert.serve.api import Limits, answer
from ofa_flexbert.serve.server import ServeOptions, Service

TEXTS = ["a gripping , funny film", "dull", "the plot was not good at all and the actors were worse", "fine"]


@contextlib.contextmanager
def running(export_dir, **limits):
    """The service of ``export_dir`` on a free port, in a thread of this process."""
    service = Service(ServeOptions(str(export_dir), port=0, limits=Limits(**limits)))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not service.server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.01)
    try:
        yield service
    finally:
        service.server.should_exit = True
        thread.join(30)


def call(port, method, path, body=None, headers=None):
    """(status, parsed JSON or text) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    data = response.read().decode()
    connection.close()
    is_json = response.getheader("content-type", "").startswith("application/json")
    return response.status, (json.loads(data) if is_json else data)


def scrape(port):
    """``{(name, labels): value}`` of /metrics, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = call(port, "GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return hand_export(tmp_path_factory.mktemp("serve_sst2"))[0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return hand_export(tmp_path_factory.mktemp("serve_mrpc"), task="mrpc", text_pair=True, seed=1)[0]


@pytest.fixture(scope="module")
def service(single):
    with running(single, max_batch_size=8, max_wait_ms=300, max_request_rows=8, max_request_bytes=2000) as s:
        yield s


def assert_same_answers(got, want):
    assert [row["label"] for row in got] == [row["label"] for row in want]
    np.testing.assert_allclose([list(row["probabilities"].values()) for row in got],
                               [list(row["probabilities"].values()) for row in want], rtol=0, atol=1e-6)


def test_predict_answers_single_sentences_as_the_predictor_does(service):
    status, body = call(service.port, "POST", "/predict", {"texts": TEXTS})
    assert status == 200
    assert_same_answers(body["predictions"], [answer(p) for p in service.predictor.predict(TEXTS)])
    assert set(body["predictions"][0]) == {"label", "probabilities"}  # a static export: no route fields


def test_predict_answers_sentence_pairs_as_the_predictor_does(pair):
    pairs = ["it was great", "boring", "bad acting", "ok"]
    with running(pair) as service:
        status, body = call(service.port, "POST", "/predict", {"texts": TEXTS, "text_pairs": pairs})
        assert status == 200
        assert_same_answers(body["predictions"], [answer(p) for p in service.predictor.predict(TEXTS, pairs)])
        assert call(service.port, "POST", "/predict", {"texts": TEXTS}) == \
            (422, {"error": "text_pairs: required: the model (mrpc) takes sentence pairs"})
        assert call(service.port, "POST", "/predict", {"texts": TEXTS, "text_pairs": pairs[:2]}) == \
            (422, {"error": "text_pairs: 2 pairs for 4 texts; send one per text"})


def test_concurrent_requests_share_batches_and_no_answer_depends_on_its_batch(service):
    """Four one-text requests of different lengths sent at once ride in fewer batches (the wait is 300 ms), and
    each answer equals the Predictor's on that text alone: padding is masked."""
    before = scrape(service.port)
    answers = {}

    def send(text):
        answers[text] = call(service.port, "POST", "/predict", {"texts": [text]})

    threads = [threading.Thread(target=send, args=(t,)) for t in TEXTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = scrape(service.port)
    for text in TEXTS:
        status, body = answers[text]
        assert status == 200
        assert_same_answers(body["predictions"], [answer(p) for p in service.predictor.predict([text])])

    def grew(name, labels=()):
        return after[(name, labels)] - before.get((name, labels), 0)

    assert grew("ofa_flexbert_requests_total", (("code", "200"),)) == 4
    assert grew("ofa_flexbert_rows_total") == 4 and grew("ofa_flexbert_batched_rows_total") == 4
    assert 1 <= grew("ofa_flexbert_batches_total") < 4
    assert grew("ofa_flexbert_route_rows_total", (("route", "w0.5_d1"),)) == 4
    assert after[("ofa_flexbert_request_latency_seconds_count", ())] >= 4
    assert 0 < after[("ofa_flexbert_request_latency_seconds", (("quantile", "0.5"),))] <= \
        after[("ofa_flexbert_request_latency_seconds", (("quantile", "0.99"),))]


BAD_REQUESTS = [
    (b"{not json", 400, "the request body is not valid JSON"),
    (b"[1, 2]", 422, 'the request body must be a JSON object: {"texts": [...]}'),
    (b"{}", 422, "texts: Field required"),
    (b'{"texts": "a film"}', 422, "texts: Input should be a valid array"),
    (b'{"texts": ["a", 3]}', 422, "texts.1: Input should be a valid string"),
    (b'{"texts": ["a"], "text": "b"}', 422, "text: Extra inputs are not permitted"),
    (b'{"texts": []}', 422, "texts: is empty; send at least one text"),
    (b'{"texts": ["a"], "text_pairs": ["b"]}', 422, "text_pairs: the model (sst-2) takes single sentences; "
                                                    "send texts only"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 413, "texts: 9 inputs; this service takes at most 8 per request "
                                                     "(--max_request_rows)"),
    (json.dumps({"texts": ["a" * 3000]}).encode(), 413, "the request body is 3015 bytes; this service takes at "
                                                        "most 2000 (--max_request_bytes)"),
]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS, ids=[m[:30] for _, _, m in BAD_REQUESTS])
def test_a_bad_request_gets_its_status_and_a_one_line_error_and_the_next_request_is_served(
        service, body, status, message):
    got_status, got = call(service.port, "POST", "/predict", body)
    assert (got_status, got["error"].split(" (")[0] if got_status == 400 else got["error"]) == (status, message)
    assert call(service.port, "POST", "/predict", {"texts": ["still serving"]})[0] == 200


def test_a_body_sent_in_chunks_is_held_to_the_byte_limit_too(service):
    """No Content-Length (chunked upload): the limit is applied while reading."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    connection.request("POST", "/predict", body=iter([b'{"texts": ["', b"a" * 2500, b'"]}']),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == \
        (413, {"error": "the request body is over 2000 bytes; this service takes at most 2000 (--max_request_bytes)"})


def test_wrong_paths_and_methods_get_json_errors(service):
    assert call(service.port, "GET", "/predict") == (405, {"error": "Method Not Allowed"})
    assert call(service.port, "GET", "/nowhere") == (404, {"error": "Not Found"})


def test_a_model_error_is_a_500_with_a_message_and_the_service_goes_on(service, monkeypatch, caplog):
    original = service.predictor.predict

    def failing(texts, pairs=None):
        if "boom" in texts:
            raise RuntimeError("the runtime could not run this batch")
        return original(texts, pairs)

    monkeypatch.setattr(service.predictor, "predict", failing)
    assert call(service.port, "POST", "/predict", {"texts": ["boom"]}) == \
        (500, {"error": "the model failed on this request's batch (RuntimeError: the runtime could not run this batch)"})
    assert call(service.port, "POST", "/predict", {"texts": ["fine"]})[0] == 200
    assert scrape(service.port)[("ofa_flexbert_requests_total", (("code", "500"),))] == 1


def test_health_and_metadata(service, single):
    assert call(service.port, "GET", "/health") == (200, {"status": "ok"})
    status, meta = call(service.port, "GET", "/metadata")
    with open(os.path.join(single, "manifest.json")) as fh:
        assert status == 200 and meta["manifest"] == json.load(fh)
    assert meta["labels"] == ["0", "1"] and meta["text_pair"] is False
    assert meta["serving"]["max_batch_size"] == 8 and meta["serving"]["address"] == f"http://127.0.0.1:{service.port}"


@pytest.mark.parametrize("flags, message", [
    (["--export_dir", "/nonexistent/export"], "error: --export_dir /nonexistent/export: no manifest.json (not a "
                                              "directory written by --stage export)"),
    (["--max_batch_size", "0"], "error: --max_batch_size: expected a positive integer, got 0"),
    (["--max_wait_ms", "-1"], "error: --max_wait_ms: expected a number of milliseconds >= 0, got -1.0"),
    (["--port", "70000"], "error: --port: expected 0..65535 (0: any free port), got 70000"),
])
def test_a_bad_flag_or_export_is_a_one_line_error_before_the_port_is_opened(single, capsys, flags, message):
    argv = ["serve", "--export_dir", single, *flags]
    assert main(argv) == 2
    assert capsys.readouterr().err == message + "\n"


def test_a_port_in_use_is_a_one_line_error(single, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--export_dir", single, "--port", str(port)]) == 2
    assert capsys.readouterr().err == (f"error: --host 127.0.0.1 --port {port}: cannot listen there "
                                       "(Address already in use)\n")


def test_connections_on_the_listening_socket_have_nagle_off():
    """asyncio (and so uvicorn) sets TCP_NODELAY on accepted connections only if the listening socket says it
    is TCP (proto IPPROTO_TCP); a socket made with proto 0 leaves Nagle on, and every small response then waits
    for the client's delayed ACK (~40 ms per request, measured before the fix)."""
    import asyncio

    from ofa_flexbert.serve.server import listen

    async def accepted_nodelay() -> int:
        seen = asyncio.get_running_loop().create_future()

        def on_connect(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = listen("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            flag = await asyncio.wait_for(seen, 10)
            writer.close()
        return flag

    assert asyncio.run(accepted_nodelay()) != 0


@pytest.mark.slow
def test_sigterm_answers_the_request_in_flight_and_exits_0(single):
    """The served process (run_ofa_glue.py serve) gets SIGTERM while a request waits in the batcher (1.5 s
    wait): the request is answered, the process says why it stopped and exits 0."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_ofa_glue.py"), "serve", "--export_dir", single,
                                "--port", "0", "--max_wait_ms", "1500"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving sst-2 w0.5_d1 (static) at http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        reply = {}
        sender = threading.Thread(target=lambda: reply.update(r=call(port, "POST", "/predict", {"texts": ["ok"]})))
        sender.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        sender.join(30)
        assert reply["r"][0] == 200 and len(reply["r"][1]["predictions"]) == 1
        assert process.wait(30) == 0
        assert process.stderr.read().strip().splitlines()[-1] == "stopped on SIGTERM after 1 request"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_a_dynamic_export_answers_each_row_with_its_own_route_in_a_shared_batch(toy_gated, tmp_path):
    """wd-dynamic (gates, early exit): rows of concurrent requests share batches, and each answer carries the
    layers, heads and MACs the Predictor gives that input; /metrics counts rows per route."""
    from conftest import stage_argv
    from ofa_flexbert.glue.data import get_task, read_split

    data_dir, _, gates = toy_gated
    config = tmp_path / "wd.json"
    config.write_text(json.dumps({"sst-2": {"mode": "wd_dynamic", "width_mult_list": [0.25, 0.5, 0.75, 1.0],
                                            "early_exit": True, "exit_threshold": 0.5}}))
    assert main(stage_argv("export", data_dir, gates, tmp_path / "out", "--inference_config", str(config))) == 0
    texts = [ex.text_a for ex in read_split(get_task("sst-2"), data_dir, "dev")[:24]]
    with running(tmp_path / "out" / "wd_dynamic", max_batch_size=32, max_wait_ms=300) as service:
        want = [answer(p) for p in service.predictor.predict(texts)]
        replies = [None] * 3
        threads = [threading.Thread(target=lambda i=i: replies.__setitem__(
            i, call(service.port, "POST", "/predict", {"texts": texts[8 * i:8 * i + 8]}))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [row for status, body in replies for row in body["predictions"]]
        assert [status for status, _ in replies] == [200] * 3
        assert [(r["label"], r["layers"], r["heads"], r["macs"]) for r in got] == \
            [(r["label"], r["layers"], r["heads"], r["macs"]) for r in want]
        assert len({tuple(r["heads"]) for r in got}) > 1  # rows of one batch took different routes
        metrics = scrape(service.port)
        routes = {labels: v for (name, labels), v in metrics.items() if name == "ofa_flexbert_route_rows_total"}
        assert sum(routes.values()) == 24 and len(routes) > 1
        assert metrics[("ofa_flexbert_batches_total", ())] < 3  # three requests merged (the 300 ms wait)
