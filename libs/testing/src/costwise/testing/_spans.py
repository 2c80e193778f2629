from __future__ import annotations

import asyncio
from collections.abc import Callable

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["span_names"]


async def span_names(
    exporter: InMemorySpanExporter, trace_id: int, *, until: Callable[[set[str]], bool], timeout: float = 5.0
) -> set[str]:
    """Names of the finished spans of ``trace_id``, once ``until`` holds for them (or ``timeout`` passes).

    A consumer's span ends after its handler acks, which can be after the caller already saw the
    handler's output, so tests wait for the spans instead of reading them once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        names = {
            s.name for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id
        }
        if until(names) or loop.time() > deadline:
            return names
        await asyncio.sleep(0.02)
