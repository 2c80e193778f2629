"""The budget hook's HTTP mapping, the keys CLI, and the committed OpenAPI document."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.contracts import encode
from costwise.contracts.subjects import GATEWAY_KEYS
from costwise.gateway import Admission, GatewayApp, GatewaySettings, build
from costwise.gateway.openapi import COMMITTED, render

from .conftest import gateway_process, responding

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}


class Budget:
    """A test double of the budget hook: refuses with whatever it is told to, and records what it was asked."""

    def __init__(self) -> None:
        self.decision = Admission(allowed=True)
        self.asked: list[tuple[str, float]] = []

    async def admit(self, tenant: str, estimate_usd: float) -> Admission:
        self.asked.append((tenant, estimate_usd))
        return self.decision


@pytest_asyncio.fixture(loop_scope="session")
async def budgeted(nc: Nats) -> AsyncIterator[tuple[GatewayApp, Budget]]:
    budget = Budget()
    built = await build(GatewaySettings(), nc=nc, budget=budget)
    yield built, budget
    await built.close()


async def test_budget_refusals_are_402_and_429(
    budgeted: tuple[GatewayApp, Budget], unique: str, js: JetStreamContext
) -> None:
    built, budget = budgeted
    key = await built.gateway.keys.create(unique)
    transport = httpx.ASGITransport(app=built.app)
    headers = {"Authorization": f"Bearer {key.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as http:
        budget.decision = Admission(allowed=False, reason="budget_exceeded", message="monthly budget of $5 spent")
        spent = await http.post("/v1/chat/completions", json=HELLO)
        budget.decision = Admission(allowed=False, reason="rate_limited", message="slow down", retry_after_s=2.4)
        fast = await http.post("/v1/requests", json=HELLO)
        budget.decision = Admission(allowed=True)
        async with responding(js, unique) as responder:
            fine = await http.post("/v1/chat/completions", json=HELLO)
    assert spent.status_code == 402
    assert spent.json()["error"] == {
        "message": "monthly budget of $5 spent",
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_exceeded",
    }
    assert fast.status_code == 429 and fast.headers["retry-after"] == "2"
    assert fast.json()["error"]["code"] == "rate_limited"
    assert fine.status_code == 200 and len(responder.seen) == 1  # refused requests were never queued
    assert responder.seen[0].api_key_id == key.key_id  # the key's public id travels (budgets, ledger per key)
    assert key.key_id in key.secret and key.secret not in encode(responder.seen[0]).decode()  # never the secret
    assert {tenant for tenant, _ in budget.asked} == {unique}
    # The estimate is a worst case: every allowed output token at the baseline price.
    assert all(estimate > 0 for _, estimate in budget.asked)


async def test_keys_cli_prints_a_key_once_that_then_authenticates(
    gateway: GatewayApp, nats_url: str, unique: str, js: JetStreamContext
) -> None:
    env = {**os.environ, "COSTWISE_GATEWAY_NATS_URL": nats_url}
    out = await cli(env, "keys", "create", "--tenant", unique)
    secret = next(line.split()[-1] for line in out.splitlines() if line.startswith("key:"))
    assert await gateway.gateway.keys.tenant_of(secret) == unique
    stored = await (await js.key_value(GATEWAY_KEYS.bucket)).get(secret.split("-")[1])  # under its id…
    assert stored.value and secret.encode() not in stored.value  # …as a digest, never the key
    await cli(env, "keys", "revoke", secret.split("-")[1])
    assert await gateway.gateway.keys.tenant_of(secret) is None
    with pytest.raises(AssertionError, match="invalid tenant"):
        await cli(env, "keys", "create", "--tenant", "not.a.token")


async def cli(env: dict[str, str], *args: str) -> str:
    proc = await gateway_process(env, *args)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_committed_openapi_document_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(), "run `python -m costwise.gateway openapi` and commit openapi.json"


class BrokenBudget:
    async def admit(self, tenant: str, estimate_usd: float) -> Admission:
        raise RuntimeError("the budget service has a bug")


async def test_a_bug_is_a_500_in_the_usual_error_shape(nc: Nats, unique: str) -> None:
    built = await build(GatewaySettings(), nc=nc, budget=BrokenBudget())
    key = await built.gateway.keys.create(unique)
    transport = httpx.ASGITransport(app=built.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.post(
            "/v1/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {key.secret}"}
        )
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": "internal",
    }
