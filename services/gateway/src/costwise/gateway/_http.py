"""The HTTP surface: FastAPI routes that translate between OpenAI-style JSON and :class:`Gateway` calls."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import nats.errors
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.trace import TracerProvider
from starlette.exceptions import HTTPException

from costwise.contracts import ErrorCode

from ._limits import BodyLimit
from ._service import Gateway
from ._tracing import TraceRequests
from .errors import ApiError
from .keys import Caller
from .schema import (
    AcceptedRequest,
    AsyncCompletionRequest,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorResponse,
    ModelList,
    RequestIdText,
    RequestStatus,
    WrongHitReport,
    WrongHitRequest,
)

__all__ = ["create_app"]

log = logging.getLogger("costwise.gateway")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in {
        400: "Invalid request (bad JSON, unknown field, out-of-range value)",
        401: "Missing or invalid API key",
        402: "Budget exhausted",
        404: "Unknown model/tier or request",
        413: "Request body too large",
        429: "Spending too fast",
        500: "Internal error",
        503: "Queue or engine unavailable",
        504: "No result before the client's timeout",
    }.items()
}
_KEYED: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Idempotency-Key already used with a different body"}
}
# The 200 of a streamed completion: one ``data: <chunk>`` event per piece of the answer, then ``data: [DONE]``.
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `chat.completion`, or with `stream: true` Server-Sent Events: `data: <chat.completion.chunk>` "
        'per piece, then `data: [DONE]`; a failure once streaming has begun is a `data: {"error": …}` event.',
        "content": {
            "text/event-stream": {
                # Before OpenAPI 3.2's itemSchema, `schema` describes one event (as SSE parsers hand it over).
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {"type": "string", "description": "a ChatCompletionChunk (JSON), or `[DONE]`"}
                    },
                }
            }
        },
    }
}
# The 200 of GET /v1/requests/{id}/stream: the events of a streamed completion, never a JSON body.
_EVENTS: dict[int | str, dict[str, Any]] = {
    200: _STREAMED[200]
    | {
        "description": "Server-Sent Events: `data: <chat.completion.chunk>` per piece, then `data: [DONE]`; a failure "
        'is a `data: {"error": …}` event (a request that fails, or no result before the client\'s timeout).'
    }
}
# Proxies must not buffer the events (nginx honours X-Accel-Buffering).
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_bearer = HTTPBearer(auto_error=False, description="An API key from `python -m costwise.gateway keys create`")
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)]
ClientTimeout = Annotated[float | None, Header(alias="x-stainless-read-timeout", gt=0, le=86400)]


async def _gateway(request: Request) -> Gateway:
    # async, though it awaits nothing: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
    # request that was a third of the gateway's own request handling (py-spy, 16 streams).
    gateway: Gateway = request.app.state.gateway
    return gateway


Service = Annotated[Gateway, Depends(_gateway)]


async def _caller(
    gateway: Service, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return await gateway.authenticate(credentials.credentials if credentials else None)


Authenticated = Annotated[Caller, Depends(_caller)]


def create_app(
    gateway: Gateway | None, *, max_body_bytes: int, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """The ASGI app over ``gateway``, which the composition root builds (it owns the connections).

    ``None`` gives an app that can only describe itself (the OpenAPI document needs no connection).
    """
    app = FastAPI(title="costwise gateway", version="1.0.0", docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if tracer_provider is not None:  # outermost, so refused requests are traced too
        app.add_middleware(TraceRequests, tracer_provider=tracer_provider)

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=_STREAMED | _ERRORS | _KEYED)
    async def chat_completions(
        body: ChatCompletionRequest,
        gateway: Service,
        caller: Authenticated,
        idempotency_key: IdempotencyKey = None,
        timeout: ClientTimeout = None,
    ) -> ChatCompletion | StreamingResponse:
        """OpenAI-compatible chat completion: queued, answered when the pipeline's result arrives, or with
        ``stream: true`` as Server-Sent Events while it is generated."""
        if body.stream:
            sse = await gateway.stream(caller, body, idempotency_key=idempotency_key, timeout_s=timeout)
            return StreamingResponse(sse, media_type="text/event-stream", headers=_SSE_HEADERS)
        return await gateway.complete(caller, body, idempotency_key=idempotency_key, timeout_s=timeout)

    @app.get("/v1/models", responses={401: _ERRORS[401]})
    async def models(gateway: Service, caller: Authenticated) -> ModelList:
        """What ``model`` may name: ``auto``, the catalog's tiers and aliases, and its backends' models."""
        return gateway.models

    @app.post("/v1/requests", status_code=202, responses=_ERRORS | _KEYED)
    async def submit(
        body: AsyncCompletionRequest, gateway: Service, caller: Authenticated, idempotency_key: IdempotencyKey = None
    ) -> AcceptedRequest:
        """Queue a chat completion and return at once; poll ``GET /v1/requests/{id}`` or await the callback."""
        return AcceptedRequest(id=await gateway.submit(caller, body, idempotency_key=idempotency_key))

    @app.get("/v1/requests/{request_id}", responses=_ERRORS)
    async def status(
        request_id: Annotated[RequestIdText, Path()], gateway: Service, caller: Authenticated
    ) -> RequestStatus:
        """A request's status and, once there, its result (only the tenant's own requests)."""
        return await gateway.status(caller.tenant, request_id)

    @app.get(
        "/v1/requests/{request_id}/stream",
        response_class=StreamingResponse,
        responses=_EVENTS | _ERRORS,
    )
    async def stream(
        request_id: Annotated[RequestIdText, Path()],
        gateway: Service,
        caller: Authenticated,
        include_usage: bool = False,
        timeout: ClientTimeout = None,
    ) -> StreamingResponse:
        """A queued request's answer as Server-Sent Events, in the format of ``stream: true``: live if it was
        submitted with ``stream: true`` and is followed before its first token, otherwise (or once it is done)
        the stored answer in pieces. ``include_usage`` adds the usage chunk (``stream_options.include_usage``)."""
        sse = await gateway.follow(caller.tenant, request_id, include_usage=include_usage, timeout_s=timeout)
        return StreamingResponse(sse, media_type="text/event-stream", headers=_SSE_HEADERS)

    @app.post("/v1/requests/{request_id}/wrong", status_code=202, responses=_ERRORS)
    async def wrong(
        request_id: Annotated[RequestIdText, Path()], body: WrongHitRequest, gateway: Service, caller: Authenticated
    ) -> WrongHitReport:
        """Report that the cache's answer to one of the tenant's requests was wrong: the cache forgets the entry and
        tightens the tenant's semantic threshold (``costwise cache wrong``). 404 unless the cache answered it."""
        return await gateway.report_wrong_hit(caller.tenant, request_id, body.reason)

    app.openapi_schema = _with_chunk(_tidy(app.openapi()))
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return await api_error(request, _validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return await api_error(request, ApiError(exc.status_code, code, str(exc.detail)))

    async def queue_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("queue unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return await api_error(request, ApiError(503, "queue_unavailable", "the request queue is unavailable"))

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # The traceback is logged by the server; the caller gets the usual error shape, not a text page.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return await api_error(request, ApiError(500, str(ErrorCode.INTERNAL), "internal error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, bug)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(nats.errors.Error, queue_down)


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
    code = "unknown_field" if first.get("type") == "extra_forbidden" else "invalid_request"
    return ApiError(400, code, message, param=where or None)


def _with_chunk(doc: dict[str, Any]) -> dict[str, Any]:
    """Publish the streamed event's data (``ChatCompletionChunk``) among the schemas: no operation returns it as
    JSON, so FastAPI would leave it out."""
    chunk = ChatCompletionChunk.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in chunk.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["ChatCompletionChunk"] = chunk
    return doc


def _tidy(doc: dict[str, Any]) -> dict[str, Any]:
    """Say what is served: validation failures answer 400 (as OpenAI's API does), not FastAPI's 422 (the only
    422 is a reused Idempotency-Key's); an optional header is absent, never ``null`` (a header has no null)."""
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
                if kinds:
                    schema.update(kinds[0])
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc
