"""The webhooks service end to end: real nats-server, real HTTP receiver, reference signature verification."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from collections.abc import Callable

import httpx
import pytest
import trustme
from nats.js import JetStreamContext
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from costwise.contracts import DeadLetter, ErrorCode, Output, Result, WebhookFailed, decode, encode, subjects
from costwise.messaging import publish
from costwise.testing import first_stored, span_names
from costwise.webhooks import Webhooks, WebhooksSettings, build, replay, webhook_id


async def complete(js: JetStreamContext, tenant: str, callback: str | None, n: int = 0) -> str:
    """Publish a finished request's result, as the router would."""
    request_id = f"r{time.time_ns()}"
    result = Result(
        request_id=request_id,
        tenant=tenant,
        status="ok",
        output=Output(text=f"answer {n}", finish_reason="stop"),
        source="engine",
        callback_url=callback,
        completed_ms=int(time.time() * 1000),
    )
    await publish(js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id))
    return request_id


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def ids(calls) -> list[str]:  # type: ignore[no-untyped-def]
    return [decode(c.body, Result).request_id for c in calls]


async def test_signatures_verify_with_every_secret_during_rotation(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    new, old = new_secret(), new_secret()
    await receiver.start()
    await start_service(secrets={unique: [new, old]}, allow=[receiver.allow])
    rid = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    for secret in (new, old):  # a receiver that knows either key accepts the call
        assert Webhook(secret).verify(call.body, call.headers)["request_id"] == rid
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(call.body, call.headers)
    assert call.headers["webhook-id"] == webhook_id(unique, rid)
    assert len(call.headers["webhook-signature"].split(" ")) == 2
    assert decode(call.body, Result).output == Output(text="answer 0", finish_reason="stop")


async def test_a_receiver_that_comes_back_gets_every_result_once_in_completion_order(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    await start_service(secrets={unique: [secret]}, allow=[receiver.allow])
    sent = []
    for n in range(3):  # the receiver is down: connections are refused
        sent.append(await complete(js, unique, receiver.url, n))
        await asyncio.sleep(0.2)
    receiver.script = [(503, 0.0, 0)] * 3  # back, but failing for a while
    await receiver.start()
    for n in range(3, 5):
        sent.append(await complete(js, unique, receiver.url, n))
    await until(lambda: len(receiver.delivered()) == 5)
    await asyncio.sleep(0.5)  # nothing more arrives
    delivered = receiver.delivered()
    assert ids(delivered) == sent
    assert [c.headers["webhook-id"] for c in delivered] == [webhook_id(unique, r) for r in sent]
    for call in delivered:
        Webhook(secret).verify(call.body, call.headers)


async def test_a_receiver_that_never_comes_back_ends_in_the_dead_letter_and_replay_delivers(
    js, nats_url, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    receiver.status = 503
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow], retry_window_s=1.0)
    rid, second = await complete(js, unique, receiver.url), await complete(js, unique, receiver.url)
    letter = await first_stored(js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d: d.request_id == rid)
    assert letter.code == ErrorCode.CALLBACK_FAILED and "HTTP 503" in letter.reason
    assert decode(letter.payload, Result).request_id == rid
    event = await first_stored(js, subjects.webhook_failed(unique), WebhookFailed, lambda e: e.request_id == rid)
    assert event.code == ErrorCode.CALLBACK_FAILED and event.last_status == 503
    assert event.webhook_id == webhook_id(unique, rid) and event.attempts == ids(receiver.calls).count(rid) >= 2
    await first_stored(js, subjects.webhook_failed(unique), WebhookFailed, lambda e: e.request_id == second)

    receiver.status = 200
    assert await replay(js, unique) == [rid, second]
    await until(lambda: len(receiver.delivered()) == 2)
    assert ids(receiver.delivered()) == [rid, second]
    assert receiver.delivered()[0].headers["webhook-id"] == webhook_id(unique, rid)

    # The command line replays one request's result (from the results stream).
    env = {**os.environ, "COSTWISE_WEBHOOKS_NATS_URL": nats_url}
    cmd = [sys.executable, "-m", "costwise.webhooks", "replay", "--tenant", unique, "--request-id", rid]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and rid in out.decode()
    await until(lambda: len(receiver.delivered()) == 3)
    assert ids(receiver.delivered()) == [rid, second, rid]


async def test_410_gone_stops_that_result_and_the_outbox_moves_on(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    receiver.script = [(410, 0.0, 0)]
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow])
    gone = await complete(js, unique, receiver.url)
    letter = await first_stored(js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d: d.request_id == gone)
    assert letter.code == ErrorCode.CALLBACK_GONE
    event = await first_stored(js, subjects.webhook_failed(unique), WebhookFailed, lambda e: e.request_id == gone)
    assert event.code == ErrorCode.CALLBACK_GONE and event.attempts == 1 and event.last_status == 410
    after = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [gone, after]  # the 410 was not retried


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([(200, 1.5, 0)], "slow receiver: the attempt times out"),
        ([(200, 0.0, 200_000)], "oversize response"),
        ([(307, 0.0, 0)], "a redirect is not followed"),
    ],
)
async def test_a_slow_oversize_or_redirect_response_is_a_failed_attempt_and_retried(
    js, start_service, receiver, new_secret, unique, script, why
) -> None:  # type: ignore[no-untyped-def]
    receiver.script = list(script)
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow], max_response_bytes=10_000)
    rid = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [rid, rid], why
    assert [c.path for c in receiver.calls] == ["/hook?token=abc"] * 2
    assert len({c.headers["webhook-id"] for c in receiver.calls}) == 1


async def test_refused_callbacks_are_dead_lettered_with_the_reason_and_the_service_keeps_going(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    async def resolver(host: str, port: int) -> list[str]:
        return {"rebind.example": ["127.0.0.1"], "meta.example": ["93.184.216.34", "169.254.169.254"]}[host]

    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow], resolver=resolver)
    refused = {
        f"http://127.0.0.1:{receiver.port + 1}/hook": "loopback",
        "http://10.1.2.3/hook": "private",
        "http://169.254.169.254/latest/meta-data/": "cloud metadata",
        f"http://localhost:{receiver.port}/hook": "local name",
        f"http://rebind.example:{receiver.port}/hook": "resolves to 127.0.0.1",
        "https://meta.example/hook": "resolves to 169.254.169.254",
        "file:///etc/passwd": "http(s)",
    }
    rids = {await complete(js, unique, url): why for url, why in refused.items()}
    ok = await complete(js, unique, receiver.url)
    for rid, why in rids.items():
        letter = await first_stored(
            js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d, r=rid: d.request_id == r
        )
        assert letter.code == ErrorCode.CALLBACK_REFUSED and why in letter.reason, letter.reason
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [ok]


async def test_the_call_goes_to_the_checked_address_with_the_original_host(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    async def resolver(host: str, port: int) -> list[str]:
        assert host == "hooks.costwise.test"  # a name no real resolver knows
        return ["127.0.0.1"]

    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=["127.0.0.1/32"], resolver=resolver)
    rid = await complete(js, unique, f"http://hooks.costwise.test:{receiver.port}/hook")
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [rid]
    assert receiver.calls[0].headers["Host"] == f"hooks.costwise.test:{receiver.port}"


async def test_malformed_messages_are_dead_lettered_and_do_not_stop_delivery(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    service = await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow])
    await service.adopt(unique)
    cases = [
        (subjects.results(unique, "bad"), b'{"type": "result.v1", "tenant": 7}', "Expected `str`"),
        (subjects.webhooks(unique), b"\xff not json", "invalid COSTWISE_WEBHOOKS payload"),
    ]
    for subject, payload, why in cases:
        await publish(js, subject, payload, msg_id=f"{unique}-{subject}-{why}")
        letter = await first_stored(
            js,
            subjects.dead_letters("webhooks"),
            DeadLetter,
            lambda d, s=subject, w=why: d.subject == s and w in d.reason,
        )
        assert letter.code == ErrorCode.MALFORMED_MESSAGE
    rid = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [rid]


async def test_a_result_naming_another_tenant_than_its_subject_is_refused_and_never_delivered(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    """The consumer checks every payload's tenant against its subject's: a result forged onto this tenant's
    results or outbox, naming another tenant, is neither queued for that tenant nor signed and sent."""
    await receiver.start()
    victim = f"{unique}v"
    service = await start_service(secrets={unique: [new_secret()], victim: [new_secret()]}, allow=[receiver.allow])
    await service.adopt(unique)
    forged = encode(Result(request_id="x1", tenant=victim, status="ok", callback_url=receiver.url))
    for subject in (subjects.results(unique, "x1"), subjects.webhooks(unique)):
        await publish(js, subject, forged, msg_id=f"{unique}-{subject}-forged")
        letter = await first_stored(
            js, subjects.dead_letters("webhooks"), DeadLetter, lambda d, s=subject: d.subject == s
        )
        assert letter.code == ErrorCode.TENANT_MISMATCH and letter.tenant == unique
        assert f"tenant {victim!r}" in letter.reason
    rid = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    assert ids(receiver.calls) == [rid]  # the forged result was never sent, under either tenant's signature
    queued = await js.stream_info(subjects.WEBHOOKS.name, subjects_filter=subjects.webhooks(victim))
    assert not queued.state.subjects, "nothing may be queued in the victim's outbox"


async def test_one_trace_from_the_result_through_the_webhook_call(
    js, start_service, receiver, new_secret, unique, tracer_provider, span_exporter
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow], tracer_provider=tracer_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("router") as router_span:
        rid = await complete(js, unique, receiver.url)  # publish injects the current traceparent
    await until(lambda: len(receiver.delivered()) == 1)
    trace_id = router_span.get_span_context().trace_id
    names = await span_names(span_exporter, trace_id, until=lambda n: {"webhooks enqueue", "webhooks deliver"} <= n)
    assert {"webhooks enqueue", "webhooks deliver"} <= names
    deliver = next(s for s in span_exporter.get_finished_spans() if s.name == "webhooks deliver")
    assert deliver.attributes["costwise.request_id"] == rid and deliver.attributes["http.response.status_code"] == 200
    assert f"{trace_id:032x}" in receiver.calls[0].headers["traceparent"]


@pytest.mark.parametrize("cert_name", ["hooks.costwise.test", "someone-else.test"])
async def test_https_goes_to_the_checked_address_and_verifies_the_original_name(
    js, start_service, receiver, new_secret, unique, tmp_path, cert_name
) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    receiver.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(receiver.tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    receiver.host = "hooks.costwise.test"
    await receiver.start()

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    await start_service(
        secrets={unique: [new_secret()]},
        allow=["127.0.0.1/32"],
        resolver=resolver,
        tls_ca_file=str(tmp_path / "ca.pem"),
        retry_window_s=1.0,
    )
    rid = await complete(js, unique, receiver.url)
    if cert_name == "hooks.costwise.test":
        await until(lambda: len(receiver.delivered()) == 1)
        assert receiver.calls[0].headers["Host"] == f"hooks.costwise.test:{receiver.port}"
        return
    letter = await first_stored(js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d: d.request_id == rid)
    assert "certificate" in letter.reason.lower() and receiver.calls == []


async def test_a_tenant_without_a_secret_is_retried_then_dead_lettered(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(secrets={"someone-else": [new_secret()]}, allow=[receiver.allow], retry_window_s=0.5)
    rid = await complete(js, unique, receiver.url)
    letter = await first_stored(js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d: d.request_id == rid)
    assert letter.code == ErrorCode.CALLBACK_FAILED and "no webhook secret" in letter.reason
    assert receiver.calls == []  # nothing unsigned ever leaves


async def test_a_retry_due_after_the_window_closed_gives_up_with_the_last_attempts_reason(
    js, start_service, receiver, new_secret, unique, caplog
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    skew = [0.0]  # the window closes between the first attempt and its retry, however fast the machine
    await start_service(
        secrets={"someone-else": [new_secret()]},
        allow=[receiver.allow],
        retry_window_s=5.0,
        clock=lambda: time.time() + skew[0],
    )
    caplog.set_level("INFO", logger="costwise.webhooks")
    rid = await complete(js, unique, receiver.url)
    await until(lambda: f"{unique}/{rid}" in caplog.text and "retry in" in caplog.text)
    skew[0] = 60.0
    letter = await first_stored(js, subjects.webhook_dead_letters(unique), DeadLetter, lambda d: d.request_id == rid)
    assert "retry window over" in letter.reason and "no webhook secret" in letter.reason


async def test_a_result_older_than_the_window_is_dead_lettered_not_sent(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow], retry_window_s=60.0)
    stale = Result(
        request_id="old1",
        tenant=unique,
        status="ok",
        callback_url=receiver.url,
        completed_ms=int(time.time() * 1000) - 120_000,
    )
    await publish(js, subjects.results(unique, "old1"), stale, msg_id=subjects.dedup_id(unique, "old1"))
    event = await first_stored(js, subjects.webhook_failed(unique), WebhookFailed, lambda e: e.request_id == "old1")
    assert event.code == ErrorCode.CALLBACK_FAILED and "before the webhooks service" in event.reason
    assert event.attempts == 0 and receiver.calls == []
    assert await replay(js, unique) == ["old1"]  # still deliverable on request
    await until(lambda: len(receiver.delivered()) == 1)


async def test_the_service_runs_from_its_entry_point_and_stops_on_sigterm(
    js, nats_url, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    secret = new_secret()
    env = {
        **os.environ,
        "COSTWISE_WEBHOOKS_NATS_URL": nats_url,
        "COSTWISE_WEBHOOKS_SECRETS": json.dumps({unique: [secret]}),
        "COSTWISE_WEBHOOKS_ALLOW": json.dumps([receiver.allow]),
        "COSTWISE_WEBHOOKS_POLL_S": "0.2",
        "COSTWISE_WEBHOOKS_RESCAN_S": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "costwise.webhooks", env=env)
    try:
        rid = await complete(js, unique, receiver.url)
        await until(lambda: len(receiver.delivered()) == 1, timeout=30)
        assert Webhook(secret).verify(receiver.calls[0].body, receiver.calls[0].headers)["request_id"] == rid
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0


async def test_retries_survive_a_restart_of_the_service(js, start_service, receiver, new_secret, unique) -> None:  # type: ignore[no-untyped-def]
    secrets = {unique: [new_secret()]}
    first = await start_service(secrets=secrets, allow=[receiver.allow])
    rid = await complete(js, unique, receiver.url)
    await asyncio.sleep(0.5)  # a few refused connections; the next retry is scheduled in JetStream
    await first.stop()
    await receiver.start()
    await start_service(secrets=secrets, allow=[receiver.allow])
    await until(lambda: len(receiver.delivered()) == 1)
    await asyncio.sleep(0.3)
    assert ids(receiver.calls) == [rid]


async def test_an_outbox_whose_consumer_was_deleted_is_re_created(
    js, start_service, receiver, new_secret, unique
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(secrets={unique: [new_secret()]}, allow=[receiver.allow])
    first = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    await js.delete_consumer(subjects.WEBHOOKS.name, subjects.webhooks_tenant(unique).durable)
    await asyncio.sleep(0.5)  # the tenant loop notices and ends
    second = await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 2)
    assert ids(receiver.calls) == [first, second]


async def test_stop_closes_what_build_opened_and_nothing_injected(nc, nats_url, receiver, new_secret, unique) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    settings = WebhooksSettings(nats_url=nats_url, secrets={unique: [new_secret()]}, allow=[receiver.allow])
    async with httpx.AsyncClient() as http:
        injected = await build(settings, nc=nc, http=http)
        await injected.start()
        await injected.adopt(unique)
        await injected.stop()
        assert nc.is_connected and not http.is_closed
        assert (await http.post(receiver.url, content=b"{}")).status_code == 200  # still usable
        assert _stopped(injected, unique)

    own = await build(settings)
    await own.start()
    await own.adopt(unique)
    await own.stop()
    assert own.nc.is_closed and own.delivery.client.is_closed and _stopped(own, unique)
    assert nc.is_connected


def _stopped(service: Webhooks, tenant: str) -> bool:
    """The service pulled ``tenant``'s outbox, and every consumer it started (its rescan may have adopted other
    tests' outboxes too) has stopped pulling."""
    consumers = [service.results, *service.outboxes.consumers.values()]
    return tenant in service.outboxes.consumers and all(c.pulling is not None and c.pulling.done() for c in consumers)
