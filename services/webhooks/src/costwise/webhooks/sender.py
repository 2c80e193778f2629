"""One webhook POST with hard limits: pinned address, no redirects, no proxies, capped response."""

from __future__ import annotations

import ssl

import httpx

from costwise.telemetry import inject

from .guard import Target
from .settings import WebhooksSettings

__all__ = ["ResponseTooLarge", "make_client", "post"]

UA = "costwise-webhooks"


class ResponseTooLarge(Exception):
    """The receiver sent more than ``max_response_bytes``: a failed attempt (we stop reading)."""


def make_client(settings: WebhooksSettings) -> httpx.AsyncClient:
    """The service's HTTP client.

    No keep-alive: connections are pooled by address, and one address may serve several callback hosts; a
    pooled TLS connection verified for one name must not carry another name's request. No proxies from the
    environment (a proxy would connect to the name, not to the checked address).
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,
        verify=_tls(settings),
    )


def _tls(settings: WebhooksSettings) -> ssl.SSLContext:
    context = httpx.create_ssl_context(trust_env=False)  # the public CAs (certifi), hostname checks on
    if settings.tls_ca_file:
        context.load_verify_locations(cafile=settings.tls_ca_file)
    return context


async def post(client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str], max_bytes: int) -> int:
    """POST ``body`` to ``target``; the response status (the body is read, up to ``max_bytes``, and dropped).

    The current trace context goes along as ``traceparent``, so a receiver can continue the request's trace.
    """
    extensions = {"sni_hostname": target.sni} if target.sni else None
    all_headers = inject({**headers, "host": target.host, "content-type": "application/json", "user-agent": UA})
    async with client.stream("POST", target.url, content=body, headers=all_headers, extensions=extensions) as resp:
        size = 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"response body over {max_bytes} bytes")
        return resp.status_code
