"""Every dependency of the gateway's routes is a coroutine: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop on every request (a third of the gateway's own request handling when ``_gateway`` was one)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from costwise.gateway._http import create_app


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def test_no_route_has_a_dependency_that_runs_in_the_thread_pool() -> None:
    app = create_app(None, max_body_bytes=1 << 20)
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    assert routes
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', type(call).__name__)}"
        for route in routes
        for call in _calls(route.dependant)
        if not (inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__))
    }
    assert not sync, sorted(sync)
