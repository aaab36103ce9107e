"""The HTTP API of ``run_ofa_glue.py serve`` (FastAPI): validation, endpoints, error bodies.

    POST /predict   {"texts": [...]} or {"texts": [...], "text_pairs": [...]}
                    -> {"predictions": [{"label", "probabilities"} | {"score"}, + "layers", "heads", "macs"
                        for a dynamic or cascade export]}
    GET  /health    {"status": "ok"}
    GET  /metadata  the export's manifest, its labels and how it is served
    GET  /metrics   Prometheus text (``metrics.ServiceMetrics``)

Every error is a JSON body ``{"error": "<one line naming the problem>"}``: 400 for a body that is
not JSON, 413 for more than ``max_request_rows`` inputs or ``max_request_bytes`` bytes, 422 for a
missing, wrong-typed or inconsistent field, 404/405 for a wrong path or method, and 500 when the
model fails (that batch only: the service goes on).  Rows are run by the micro-batcher's worker
thread; a handler only awaits their futures.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Optional

import pydantic
from fastapi import Request

from ofa_flexbert.deploy.predictor import Prediction, Predictor

from .batcher import MicroBatcher
from .metrics import ServiceMetrics

logger = logging.getLogger("ofa_flexbert.serve")


@dataclass(frozen=True)
class Limits:
    """What one request may hold and how rows are batched (the ``serve`` flags)."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_request_rows: int = 256
    max_request_bytes: int = 1 << 20


class RequestError(Exception):
    """A request the service refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PredictRequest(pydantic.BaseModel):
    """The body of POST /predict; strict, so a number is not taken for a text."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    texts: list[str]
    text_pairs: Optional[list[str]] = None


def answer(prediction: Prediction) -> dict[str, Any]:
    """The JSON of one input's :class:`Prediction`."""
    row: dict[str, Any] = ({"score": prediction.label} if prediction.probabilities is None else
                           {"label": prediction.label, "probabilities": prediction.probabilities})
    if prediction.route is not None:
        steps = prediction.route.executed
        row.update(layers=[layer for layer, _ in steps], heads=[w.heads for _, w in steps], macs=int(prediction.macs))
    return row


def route_label(prediction: Prediction, static_tag: str) -> str:
    """The ``/metrics`` route label of one answered row: the export's tag for a static subnet, else the
    layers and heads it ran."""
    if prediction.route is None:
        return static_tag
    steps = prediction.route.executed
    return f"{len(steps)} layers, heads " + ",".join(str(w.heads) for _, w in steps)


def parse_request(body: bytes, takes_pairs: bool, limits: Limits, task: str) -> tuple[list[str], Optional[list[str]]]:
    """(texts, text_pairs or None) of a /predict body; :class:`RequestError` naming the problem otherwise."""
    if len(body) > limits.max_request_bytes:
        raise RequestError(413, f"the request body is {len(body)} bytes; this service takes at most "
                                f"{limits.max_request_bytes} (--max_request_bytes)")
    try:
        request = PredictRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestError(400, f"the request body is not valid JSON ({first['ctx'].get('error', first['msg'])})"
                               if first.get("ctx") else "the request body is not valid JSON") from None
        if first["type"] == "model_type":
            raise RequestError(422, 'the request body must be a JSON object: {"texts": [...]}') from None
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, f"{where}: {first['msg']}") from None
    texts, pairs = request.texts, request.text_pairs
    if not texts:
        raise RequestError(422, "texts: is empty; send at least one text")
    if len(texts) > limits.max_request_rows:
        raise RequestError(413, f"texts: {len(texts)} inputs; this service takes at most {limits.max_request_rows} "
                                "per request (--max_request_rows)")
    if takes_pairs and pairs is None:
        raise RequestError(422, f"text_pairs: required: the model ({task}) takes sentence pairs")
    if not takes_pairs and pairs is not None:
        raise RequestError(422, f"text_pairs: the model ({task}) takes single sentences; send texts only")
    if pairs is not None and len(pairs) != len(texts):
        raise RequestError(422, f"text_pairs: {len(pairs)} pairs for {len(texts)} texts; send one per text")
    return texts, pairs


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than one byte past ``limit`` (a huge upload is refused, not buffered)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body is {declared} bytes; this service takes at most {limit} "
                                "(--max_request_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request body is over {limit} bytes; this service takes at most {limit} "
                                    "(--max_request_bytes)")
    return b"".join(chunks)


def create_app(predictor: Predictor, limits: Limits, served: dict[str, Any], metrics: Optional[ServiceMetrics] = None):
    """The FastAPI application serving ``predictor`` (``served``: how, for /metadata)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    metrics = metrics or ServiceMetrics()
    predictor.batch_size = max(predictor.batch_size, limits.max_batch_size)  # a merged batch is one runtime call

    def run_rows(texts: list[str], pairs: Optional[list[str]]) -> list[Prediction]:
        return predictor.predict(texts, pairs)

    batcher = MicroBatcher(run_rows, limits.max_batch_size, limits.max_wait_ms, on_batch=metrics.batch)
    manifest = predictor.manifest
    tag = str(manifest.get("tag", "model"))

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()  # after uvicorn has answered every request in flight

    app = FastAPI(title="ofa-flexbert", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics, app.state.batcher = metrics, batcher

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # 404, 405 in our error shape
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(422, str(exc))

    @app.post("/predict")
    async def predict(request: Request):
        arrived = time.perf_counter()
        try:
            body = await read_body(request, limits.max_request_bytes)
            texts, pairs = parse_request(body, predictor.takes_pairs, limits, predictor.task.name)
            futures = batcher.submit(texts, pairs)
            try:
                chunks = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            except Exception as exc:
                logger.error(f"error: the model failed on a batch: {type(exc).__name__}: {exc}")
                raise RequestError(500, f"the model failed on this request's batch ({type(exc).__name__}: {exc})")
        except RequestError as exc:
            metrics.request(exc.status, time.perf_counter() - arrived)
            return error(exc.status, str(exc))
        predictions = [p for chunk in chunks for p in chunk]
        metrics.request(200, time.perf_counter() - arrived, len(predictions),
                        tuple(route_label(p, tag) for p in predictions))
        return {"predictions": [answer(p) for p in predictions]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return {"manifest": manifest, "labels": list(predictor.task.labels or []),
                "text_pair": predictor.takes_pairs, "serving": served}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
