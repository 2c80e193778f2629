from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio
import sqlalchemy as sa
from nats.js import JetStreamContext

from costwise.billing import Billing, BillingSettings, Ledger, Line, build, ledger_report, open_ledger
from costwise.billing._cli import main
from costwise.billing._ledger import _normalised
from costwise.billing._metrics import Rollup
from costwise.billing._report import usd
from costwise.billing._schema import LEDGER
from costwise.budget import Admission, open_budgets
from costwise.catalog import Catalog, WorkerPool
from costwise.contracts import DeadLetter, ErrorCode, Result, UsageEvent, encode, subjects
from costwise.contracts.subjects import BILLING_RESULTS, BILLING_USAGE
from costwise.messaging import publish
from costwise.testing import first_stored

Traffic = tuple[list[UsageEvent], list[Result]]


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _caught_up(js: JetStreamContext) -> bool:
    infos = [await js.consumer_info(spec.stream, spec.durable) for spec in (BILLING_USAGE, BILLING_RESULTS)]
    return all(info.num_pending == 0 and info.num_ack_pending == 0 for info in infos)


async def _send(js: JetStreamContext, traffic: Traffic, *, replay: str = "") -> None:
    usage, results = traffic
    for event in usage:
        msg_id = subjects.dedup_id(event.tenant, event.job_id, "usage", str(event.attempt), replay)
        await publish(js, subjects.usage(event.tenant), event, msg_id=msg_id)
    for result in results:
        msg_id = subjects.dedup_id(result.tenant, result.request_id, replay)
        await publish(js, subjects.results(result.tenant, result.request_id), result, msg_id=msg_id)


@pytest_asyncio.fixture
async def billing(nc, nats_url: str, ledger: Ledger, catalog: Catalog, unique: str) -> AsyncIterator[Billing]:  # type: ignore[no-untyped-def]
    """Billing on the session's NATS, accepting only this test's tenant, with one backend in no tier."""
    orphan = WorkerPool(name="orphan", model="m", gpu_usd_per_hour=1, prefill_tokens_per_s=1, decode_tokens_per_s=1)
    catalog = msgspec.structs.replace(catalog, backends=[*catalog.backends, orphan])
    settings = BillingSettings(nats_url=nats_url, tenants=[unique], semantic_hit_usd="0.000002", metrics_port=0)
    service = await build(settings, nc=nc, catalog=catalog, ledger=ledger)
    await service.start()
    yield service
    await service.stop()


async def test_replaying_every_event_leaves_the_ledger_unchanged(
    js: JetStreamContext, billing: Billing, traffic: Traffic, traffic_lines: list[Line], unique: str
) -> None:
    await _send(js, traffic)
    expected = len(traffic_lines)
    await _eventually(lambda: asyncio.to_thread(lambda: len(billing.ledger.lines(tenant=unique)) == expected))
    await _eventually(lambda: _caught_up(js))
    before = billing.ledger.lines(tenant=unique)
    await _send(js, traffic, replay="again")  # new msg ids: the stream stores them all a second time
    await _eventually(lambda: _caught_up(js))
    assert billing.ledger.lines(tenant=unique) == before
    usage_tokens = sum(e.usage.prompt_tokens + e.usage.completion_tokens for e in traffic[0])
    assert sum(line.tokens_in + line.tokens_out for line in before if line.kind == "attempt") == usage_tokens


async def test_bad_events_are_dead_lettered_and_the_consumer_keeps_going(
    js: JetStreamContext, billing: Billing, traffic: Traffic, unique: str
) -> None:
    good = traffic[0][0]
    bad = {
        "no-pool": (msgspec.structs.replace(good, request_id="no-pool", pool="nowhere"), ErrorCode.UNKNOWN_POOL),
        "orphan": (msgspec.structs.replace(good, request_id="orphan", pool="orphan"), ErrorCode.UNPRICED),
        "stranger": (
            msgspec.structs.replace(good, request_id="stranger", tenant=f"{unique}x"),
            ErrorCode.UNKNOWN_TENANT,
        ),
    }
    for event, _ in bad.values():
        await publish(js, subjects.usage(event.tenant), event, msg_id=f"{event.tenant}-{event.request_id}")
    negative = msgspec.json.decode(encode(good))
    negative["request_id"], negative["usage"]["prompt_tokens"] = "negative", -5
    await publish(js, subjects.usage(unique), msgspec.json.encode(negative), msg_id=f"{unique}-negative")
    await publish(js, subjects.usage(unique), good, msg_id=f"{unique}-good")
    await _eventually(lambda: asyncio.to_thread(lambda: len(billing.ledger.lines(tenant=unique)) == 1))

    expected = {rid: code for rid, (_, code) in bad.items()} | {"negative": ErrorCode.MALFORMED_MESSAGE}
    for rid, code in expected.items():
        letter = await first_stored(
            js, subjects.dead_letters("billing"), DeadLetter, lambda d, rid=rid: d.request_id == rid, timeout=10
        )
        assert letter.code == code and letter.reason and letter.payload
    negative_letter = await first_stored(
        js, subjects.dead_letters("billing"), DeadLetter, lambda d: d.request_id == "negative", timeout=10
    )
    assert "prompt_tokens" in negative_letter.reason
    # The events were not requests: nobody's result was overwritten with an error.
    info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(unique))
    assert not info.state.subjects


async def test_billing_settles_reservations_to_the_ledger(
    js: JetStreamContext, billing: Billing, traffic: Traffic, unique: str
) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("1"), "total")
    admitted = await budgets.admit(unique, "spot", Decimal("0.5"))
    assert isinstance(admitted, Admission)
    await _send(js, ([traffic[0][0]], [traffic[1][0]]))

    async def settled() -> bool:
        state = await budgets.state(unique)
        return state is not None and not state.reservations and state.spent_usd > 0

    await _eventually(settled)
    state = await budgets.state(unique)
    assert state is not None and state.spent_usd == Decimal(billing.ledger.spent_nusd(unique, 0)) / 10**9
    await _eventually(lambda: _caught_up(js))


def _scrape(port: int | None) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    }


async def test_billing_settles_an_api_keys_budget_from_the_keys_own_lines(
    js: JetStreamContext, billing: Billing, traffic: Traffic, unique: str
) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("1"), "total", api_key_id="k1")
    for rid in ("spot", "ondemand"):
        assert isinstance(await budgets.admit(unique, rid, Decimal("0.1"), api_key_id="k1"), Admission)
    await _send(js, (traffic[0][:3], traffic[1][:3]))  # spot + ondemand came in with k1, groq with k2

    async def settled() -> bool:
        state = await budgets.state(unique, api_key_id="k1")
        return state is not None and not state.reservations and state.spent_usd > 0

    await _eventually(settled)
    key = await budgets.state(unique, api_key_id="k1")
    key_spent = billing.ledger.spent_nusd(unique, 0, api_key_id="k1")
    assert key is not None and key.spent_usd == Decimal(key_spent) / 10**9
    assert key_spent < billing.ledger.spent_nusd(unique, 0)  # k2's request is not the key's
    await _eventually(lambda: _caught_up(js))  # nothing left in flight for the next test's consumer


async def test_metrics_follow_the_ledger_without_rereading_it(
    js: JetStreamContext, billing: Billing, traffic: Traffic, traffic_lines: list[Line], unique: str
) -> None:
    """The metrics are running sums moved per commit: after new (and replayed) events they equal a fresh report."""
    half = len(traffic[0]) // 2
    for part in ((traffic[0][:half], traffic[1][:half]), (traffic[0][half:], traffic[1][half:])):
        await _send(js, part)
        await _eventually(lambda: _caught_up(js))
    await _send(js, traffic, replay="again")  # redelivered events change neither the ledger nor the sums
    await _eventually(lambda: _caught_up(js))
    assert len(billing.ledger.lines(tenant=unique)) == len(traffic_lines)
    metrics = await asyncio.to_thread(_scrape, billing.metrics_port)
    report = ledger_report(billing.ledger, tenant=unique)
    assert metrics[f'costwise_billing_spend_usd{{tenant="{unique}"}}'] == float(usd(report.actual_nusd))
    per_query = metrics[f'costwise_billing_cost_per_query_usd{{tenant="{unique}"}}']
    assert per_query == float(usd(report.cost_per_query_nusd)) > 0
    for lever, amount in report.savings_nusd.items():
        assert metrics[f'costwise_billing_savings_usd{{lever="{lever}",tenant="{unique}"}}'] == float(usd(amount))
    assert report.savings_nusd["resume_prefill"] < 0  # the resumed request's re-prefill is a cost


def test_the_metrics_sums_are_seeded_from_the_ledger_at_start(
    sqlite_ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    tenant = traffic[0][0].tenant
    sqlite_ledger.append(traffic_lines[:5])
    rollup = Rollup()
    rollup.add(sqlite_ledger.request_totals())
    rollup.apply(*sqlite_ledger.append_and_diff(traffic_lines[3:]))  # overlapping: the repeats change nothing
    sums, report = rollup.snapshot()[tenant], ledger_report(sqlite_ledger, tenant=tenant)
    assert sums.actual_nusd == report.actual_nusd and sums.cost_per_query_nusd == report.cost_per_query_nusd
    assert dict(sums.savings_nusd) == report.savings_nusd and sums.finished == report.requests


def test_report_command_prints_text_and_writes_html(
    sqlite_ledger: Ledger,
    traffic_lines: list[Line],
    traffic: Traffic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    tenant = traffic[0][0].tenant
    sqlite_ledger.append(traffic_lines)
    monkeypatch.setenv("COSTWISE_BILLING_DATABASE_URL", str(sqlite_ledger.engine.url))
    out = tmp_path / "report.html"
    assert main(["report", "--tenant", tenant, "--key", "k2", "--json"]) == 0
    keyed = msgspec.json.decode(capsys.readouterr().out)
    assert keyed["api_key_id"] == "k2" and keyed["requests"] == 1 and keyed["sources"] == {"provider": 1}
    assert main(["report", "--tenant", tenant, "--since", "2025-11-01", "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"tenant {tenant}" in text and "savings waterfall" in text and "requests        10" in text
    page = out.read_text()
    assert "Savings waterfall" in page and "Cost per query over time" in page and "Share of traffic per path" in page
    assert "<script src=" not in page  # plotly's JS is inline: the file opens offline


def test_budget_command_sets_and_shows_a_budget(
    nats_url: str, unique: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COSTWISE_BILLING_NATS_URL", nats_url)
    assert main(["budget", "set", "--tenant", unique, "--usd", "10", "--period", "month"]) == 0
    assert main(["budget", "show", "--tenant", unique]) == 0
    shown = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"limit_usd":"10"' in shown and '"period":"month"' in shown
    assert main(["budget", "show", "--tenant", f"{unique}none"]) == 1
    assert main(["budget", "set", "--tenant", unique, "--key", "k1", "--usd", "2", "--period", "day"]) == 0
    assert main(["budget", "show", "--tenant", unique, "--key", "k1"]) == 0
    shown = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"limit_usd":"2"' in shown and '"api_key_id":"k1"' in shown
    assert main(["budget", "show", "--tenant", unique, "--key", "k2"]) == 1
    with pytest.raises(SystemExit):
        main(["budget", "show", "--tenant", unique, "--key", "a.b"])


async def test_nothing_is_acked_until_the_ledger_commits(
    nc,
    nats_url: str,
    js: JetStreamContext,
    catalog: Catalog,
    traffic: Traffic,
    traffic_lines: list[Line],
    unique: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with ledger.engine.begin() as conn:
        LEDGER.drop(conn)  # the database "breaks": every commit fails
    service = await build(BillingSettings(nats_url=nats_url, tenants=[unique]), nc=nc, catalog=catalog, ledger=ledger)
    await service.start()
    try:
        await _send(js, traffic)
        await asyncio.sleep(1.5)
        assert not await _caught_up(js)  # failed batches were nak'ed, not acked
        with ledger.engine.begin() as conn:
            LEDGER.create(conn)  # the database is back: redeliveries land, each once
        expected = len(traffic_lines)
        await _eventually(lambda: asyncio.to_thread(lambda: len(ledger.lines(tenant=unique)) == expected))
        await _eventually(lambda: _caught_up(js))
    finally:
        await service.stop()
        ledger.close()


@pytest.mark.parametrize("db", ["sqlite", "pg"])
def test_a_ledger_from_before_api_keys_upgrades_in_place(
    db: str, tmp_path: Path, postgres_url: str, traffic_lines: list[Line], unique: str
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    if db == "pg":
        with sa.create_engine(_normalised(postgres_url), isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{unique}"'))
        url = sa.make_url(_normalised(postgres_url)).set(database=unique).render_as_string(hide_password=False)
    old = open_ledger(url, migrate=False)
    try:
        old.migrate("0001")  # a ledger written before lines carried API keys
        row = {k: v for k, v in msgspec.structs.asdict(traffic_lines[0]).items() if k != "api_key_id"}
        with old.engine.begin() as conn:
            conn.execute(sa.table("ledger", *(sa.column(k) for k in row)).insert(), [row])
        old.migrate()
        assert old.lines() == [msgspec.structs.replace(traffic_lines[0], api_key_id=None)]  # kept, no key
        old.append(traffic_lines)
        assert len(old.lines()) == len(traffic_lines)
    finally:
        old.close()


def test_migrations_build_exactly_the_schema_the_code_queries(ledger: Ledger) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from costwise.billing._schema import METADATA

    with ledger.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), METADATA) == []


async def test_events_after_an_idle_spell_are_still_billed(
    js: JetStreamContext, billing: Billing, traffic: Traffic, traffic_lines: list[Line], unique: str
) -> None:
    await asyncio.sleep(2.5)  # several empty fetches: each ends in a timeout the consumer must shrug off
    await _send(js, traffic)
    expected = len(traffic_lines)
    await _eventually(lambda: asyncio.to_thread(lambda: len(billing.ledger.lines(tenant=unique)) == expected))


async def test_an_event_naming_another_tenant_than_its_subject_is_refused_and_not_billed(
    js: JetStreamContext, billing: Billing, traffic: Traffic, unique: str
) -> None:
    """The consumer checks every payload's tenant against its subject's before billing sees it: a usage event
    or a result forged onto this tenant's subject, naming another tenant, bills nobody."""
    victim = f"{unique}v"
    usage = msgspec.structs.replace(traffic[0][0], request_id="forged-usage", tenant=victim)
    result = msgspec.structs.replace(traffic[1][0], request_id="forged-result", tenant=victim)
    await publish(js, subjects.usage(unique), usage, msg_id=f"{unique}-forged-usage")
    await publish(js, subjects.results(unique, "forged-result"), result, msg_id=f"{unique}-forger")
    await publish(js, subjects.usage(unique), traffic[0][0], msg_id=f"{unique}-good")
    await _eventually(lambda: asyncio.to_thread(lambda: len(billing.ledger.lines(tenant=unique)) == 1))
    for subject, rid in (
        (subjects.usage(unique), "forged-usage"),
        (subjects.results(unique, "forged-result"), "forged-result"),
    ):
        letter = await first_stored(
            js, subjects.dead_letters("billing"), DeadLetter, lambda d, s=subject: d.subject == s, timeout=10
        )
        assert letter.code == ErrorCode.TENANT_MISMATCH and letter.tenant == unique and victim in letter.reason
        assert letter.request_id == rid
    await _eventually(lambda: _caught_up(js))
    assert billing.ledger.lines(tenant=victim) == []
    assert [line.request_id for line in billing.ledger.lines(tenant=unique)] == [traffic[0][0].request_id]
    # Usage events and results are no requests: no error result was published for either tenant.
    victims = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(victim))
    assert not victims.state.subjects
    own = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(unique))
    assert own.state.subjects == {subjects.results(unique, "forged-result"): 1}  # the forged result itself


async def test_stop_closes_what_build_opened_and_nothing_injected(
    nc, nats_url: str, catalog: Catalog, sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    closed: list[Ledger] = []
    close = Ledger.close

    def recorded(ledger: Ledger) -> None:
        closed.append(ledger)
        close(ledger)

    monkeypatch.setattr(Ledger, "close", recorded)
    injected = await build(BillingSettings(nats_url=nats_url), nc=nc, catalog=catalog, ledger=sqlite_ledger)
    await injected.start()
    await injected.stop()
    assert nc.is_connected and closed == []
    assert sqlite_ledger.count() >= 0  # still usable
    assert all(c.pulling is not None and c.pulling.done() for c in injected.consumers)

    settings = BillingSettings(nats_url=nats_url, database_url=f"sqlite:///{tmp_path / 'own.db'}", metrics_port=0)
    own = await build(settings, catalog=catalog)
    await own.start()
    assert await asyncio.to_thread(_scrape, own.metrics_port) is not None
    await own.stop()
    assert own.nc.is_closed and closed == [own.ledger]
    assert all(c.pulling is not None and c.pulling.done() for c in own.consumers)
    with pytest.raises(OSError):  # the metrics server is shut and its port released
        await asyncio.to_thread(_scrape, own.metrics_port)
    assert nc.is_connected
