"""Attempts and results: what the caller learns about the route its request took and what each step cost."""

from __future__ import annotations

from costwise.catalog import Catalog, Provider
from costwise.contracts import Attempt, Completion, ErrorCode, ErrorInfo, Job, Output, Result

__all__ = ["attempt_of", "error_result", "ok_result"]


def attempt_of(catalog: Catalog, done: Completion, outcome: str, reason: str = "") -> Attempt:
    try:
        cost = float(catalog.backend(done.job.pool).price.cost(done.usage))
    except KeyError:  # a backend this router's catalog does not list (yet): report tokens, not a guess
        cost = 0.0
    return Attempt(
        backend=done.job.pool,
        tier=done.job.tier,
        stage=done.job.stage,
        model=done.model,
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        usage=done.usage,
        cost_usd=cost,
        spot=done.spot,
        worker_id=done.worker_id,
    )


def _source(catalog: Catalog, pool: str) -> str:
    try:
        return "provider" if isinstance(catalog.backend(pool), Provider) else "engine"
    except KeyError:
        return "engine"


def ok_result(catalog: Catalog, done: Completion, route: list[Attempt], now_ms: int) -> Result:
    req = done.job.request
    return Result(
        request_id=req.request_id,
        tenant=req.tenant,
        status="ok",
        output=Output(text=done.text, finish_reason=done.finish_reason),
        source=_source(catalog, done.job.pool),  # type: ignore[arg-type]
        model=done.model,
        pool=done.job.pool,
        usage=done.usage,
        cost_usd=sum(a.cost_usd for a in route),
        callback_url=req.callback_url,
        created_ms=req.created_ms,
        completed_ms=now_ms,
        route=route,
        api_key_id=req.api_key_id,
    )


def error_result(job: Job, route: list[Attempt], code: ErrorCode, message: str, now_ms: int) -> Result:
    req = job.request
    return Result(
        request_id=req.request_id,
        tenant=req.tenant,
        status="error",
        error=ErrorInfo(code=code, message=message),
        cost_usd=sum(a.cost_usd for a in route),
        callback_url=req.callback_url,
        created_ms=req.created_ms,
        completed_ms=now_ms,
        route=route,
        api_key_id=req.api_key_id,
    )
