"""What a trace says about an answer: OpenTelemetry GenAI attributes plus costwise's cost, cache and route."""

from __future__ import annotations

from opentelemetry.trace import get_current_span

from costwise.contracts import Result

__all__ = ["record_result"]


def record_result(result: Result, *, requested_model: str | None = None, baseline_usd: float | None = None) -> None:
    """Put ``result``'s attributes on the current span (a no-op when nothing is traced).

    ``baseline_usd``: what the same answer would have cost with no levers; the span then also says what was saved.
    """
    span = get_current_span()
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.response.model": result.model or "",
            "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": result.usage.completion_tokens,
            "costwise.request_id": result.request_id,
            "costwise.tenant": result.tenant,
            "costwise.source": result.source,
            "costwise.cost_usd": result.cost_usd,
            "costwise.route": [f"{a.backend}:{a.stage}:{a.outcome}" for a in result.route],
            "costwise.attempts": len(result.route),
        }
    )
    if requested_model is not None:
        span.set_attribute("gen_ai.request.model", requested_model)
    if baseline_usd is not None:
        span.set_attributes(
            {"costwise.baseline_usd": baseline_usd, "costwise.savings_usd": baseline_usd - result.cost_usd}
        )
    if result.cache is not None:
        span.set_attributes(
            {
                "costwise.cache.kind": result.cache.kind,
                "costwise.cache.similarity": result.cache.similarity,
                "costwise.cache.saved_output_tokens": result.cache.saved.completion_tokens,
            }
        )
    if result.error is not None:
        span.set_attribute("error.type", str(result.error.code))
