"""Request size limit, enforced on the raw bytes before anything parses them."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

__all__ = ["BodyLimit"]


class BodyLimit:
    """Reads at most ``max_bytes`` of a request body (413 beyond that), then hands it to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._declared_error(scope)
        body = None if error else await self._read(receive)
        if body is None:
            error = error or self._too_large()
            await JSONResponse(error.body(), error.status)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _declared_error(self, scope: Scope) -> ApiError | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is None:
            return None
        if not declared.isdigit():
            return ApiError(400, "invalid_request", "Content-Length is not a number")
        return self._too_large() if int(declared) > self.max_bytes else None

    def _too_large(self) -> ApiError:
        return ApiError(413, "request_too_large", f"request body exceeds {self.max_bytes} bytes")

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # client went away; the app will see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
