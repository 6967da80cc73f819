"""The FastAPI app around a `GRMService`: authorization, body caps, errors as 4xx naming the
field, a timeout per request, and one log line per request (method, path, status, time, size;
never the content). Imported only when a server is built (FastAPI is the `serve` extra)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rlhfv.serve.grm import GRMService
from rlhfv.serve.protocol import (
    GroupRequest,
    OpenRLHFRequest,
    PairRequest,
    PointwiseRequest,
    RequestError,
    parse_body,
)

logger = logging.getLogger(__name__)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) once it passes `limit` bytes, however it is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(413, "body", f"body of {declared} bytes, over {limit} (--max-request-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body", f"body over {limit} bytes (--max-request-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: GRMService, token: str | None = None) -> Any:
    """The FastAPI app serving `service`; with a `token`, every endpoint but /health needs
    `Authorization: Bearer <token>`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(b.serve()) for b in (service.pairs, service.points)]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="rlhfv GRM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def log_request(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        logger.info(
            "%s %s %d %.0f ms %s B",
            request.method,
            request.url.path,
            response.status_code,
            1000 * (time.perf_counter() - start),
            request.headers.get("content-length", "-"),
        )  # one line per request, never its content
        return response

    def authorize(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization")
        if header is None:
            raise RequestError(401, "Authorization", "Authorization: this server needs 'Bearer <token>'")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RequestError(403, "Authorization", "Authorization: wrong bearer token")

    def endpoint(body_type: Any, handle: Callable[[Any], Awaitable[dict[str, Any]]]) -> Callable[..., Any]:
        async def route(request: Request) -> JSONResponse:
            try:
                authorize(request)
                body = parse_body(await read_body(request, service.limits.max_request_bytes), body_type)
                answer = await asyncio.wait_for(handle(body), service.limits.request_timeout_s)
                return JSONResponse(answer)
            except RequestError as e:
                return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status)
            except TimeoutError:
                timeout = service.limits.request_timeout_s
                return JSONResponse(
                    {"error": f"no answer within {timeout} s (--request-timeout-s)"}, status_code=504
                )
            except Exception as e:  # a failed judge call: this request fails, the server goes on
                logger.exception("%s failed", request.url.path)
                return JSONResponse({"error": f"judge failed: {type(e).__name__}"}, status_code=500)

        return route

    app.add_api_route("/v1/pairwise", endpoint(PairRequest, service.pairwise), methods=["POST"])
    app.add_api_route("/v1/grouped", endpoint(GroupRequest, service.grouped), methods=["POST"])
    app.add_api_route("/v1/pointwise", endpoint(PointwiseRequest, service.pointwise), methods=["POST"])
    app.add_api_route("/get_reward", endpoint(OpenRLHFRequest, service.get_reward), methods=["POST"])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        try:
            authorize(request)
        except RequestError as e:
            return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status)
        return JSONResponse(service.info())

    return app
