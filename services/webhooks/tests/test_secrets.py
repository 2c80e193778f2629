"""Issue 18 item 4: webhook secrets in the ``WEBHOOK_SECRETS`` bucket, managed by ``python -m costwise.webhooks
secret …`` (its function here), read by the running service when signing: no restart."""

from __future__ import annotations

import asyncio
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from costwise.callbacks import SecretStore
from costwise.contracts import Result, decode
from costwise.contracts.subjects import WEBHOOK_SECRETS
from costwise.webhooks import WebhooksSettings, secret_command
from costwise.webhooks.__main__ import main

from .test_delivery import complete, until


async def cli(capsys: pytest.CaptureFixture[str], nats_url: str, *args: str, **options: object) -> tuple[int, str]:
    """Run one ``secret`` command against the real server: (exit status, stdout)."""
    capsys.readouterr()
    action, tenant = args
    status = await secret_command(WebhooksSettings(nats_url=nats_url), action, tenant, **options)  # type: ignore[arg-type]
    return status, capsys.readouterr().out.strip()


def verifies(secret: str, call) -> bool:  # type: ignore[no-untyped-def]
    try:
        Webhook(secret).verify(call.body, call.headers)
    except WebhookVerificationError:
        return False
    return True


async def test_create_rotate_revoke_through_the_cli_and_the_running_service_signs_accordingly(
    js, nats_url, start_service, receiver, unique, capsys
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(allow=[receiver.allow], secrets_cache_s=0.0)  # started before the tenant has any secret

    status, first = await cli(capsys, nats_url, "create", unique)
    assert status == 0 and first.startswith("whsec_")
    assert (await cli(capsys, nats_url, "create", unique))[0] == 1  # one create; then rotate
    await complete(js, unique, receiver.url, 0)
    await until(lambda: len(receiver.delivered()) == 1)
    assert verifies(first, receiver.delivered()[0])

    status, second = await cli(capsys, nats_url, "rotate", unique)
    assert status == 0 and second.startswith("whsec_") and second != first
    await complete(js, unique, receiver.url, 1)
    await until(lambda: len(receiver.delivered()) == 2)
    rotating = receiver.delivered()[1]
    assert verifies(first, rotating) and verifies(second, rotating)  # two live secrets while rotating
    assert len(rotating.headers["webhook-signature"].split(" ")) == 2

    status, out = await cli(capsys, nats_url, "revoke", unique, previous=True)
    assert status == 0 and out == f"revoked 1 previous secret(s) of tenant {unique}"
    await complete(js, unique, receiver.url, 2)
    await until(lambda: len(receiver.delivered()) == 3)
    after = receiver.delivered()[2]
    assert verifies(second, after) and not verifies(first, after)
    assert decode(after.body, Result).output is not None

    status, out = await cli(capsys, nats_url, "revoke", unique)
    assert status == 0 and out == f"revoked 1 secret(s) of tenant {unique}"
    store = SecretStore(await js.key_value(WEBHOOK_SECRETS.bucket))
    assert await store.live(unique) == ()  # an empty entry: revoked, and no env fallback brings it back


async def test_a_secret_created_after_the_service_started_is_picked_up_without_a_restart(
    js, nats_url, start_service, receiver, unique, capsys
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(allow=[receiver.allow], secrets_cache_s=0.2)
    rid = await complete(js, unique, receiver.url)  # no secret yet: retried, never sent unsigned
    await asyncio.sleep(0.5)
    assert receiver.calls == []
    _, secret = await cli(capsys, nats_url, "create", unique)
    await until(lambda: len(receiver.delivered()) == 1)
    assert Webhook(secret).verify(receiver.delivered()[0].body, receiver.delivered()[0].headers)["request_id"] == rid


async def test_a_rotated_out_secret_expires_after_its_ttl(
    js, nats_url, start_service, receiver, unique, capsys
) -> None:  # type: ignore[no-untyped-def]
    await receiver.start()
    await start_service(allow=[receiver.allow], secrets_cache_s=0.0)
    _, first = await cli(capsys, nats_url, "create", unique)
    _, second = await cli(capsys, nats_url, "rotate", unique, previous_ttl_s=0.5)
    await asyncio.sleep(0.6)
    await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    call = receiver.delivered()[0]
    assert verifies(second, call) and not verifies(first, call)


async def test_env_secrets_seed_the_bucket_and_the_bucket_wins(
    js, nats_url, start_service, receiver, new_secret, unique, capsys
) -> None:  # type: ignore[no-untyped-def]
    env = new_secret()
    await receiver.start()
    await start_service(secrets={unique: [env]}, allow=[receiver.allow], secrets_cache_s=0.0)
    store = SecretStore(await js.key_value(WEBHOOK_SECRETS.bucket))
    assert await store.live(unique) == (env,)  # seeded: the gateway sees that the tenant can be signed for
    _, rotated = await cli(capsys, nats_url, "rotate", unique)
    await cli(capsys, nats_url, "revoke", unique, previous=True)
    await complete(js, unique, receiver.url)
    await until(lambda: len(receiver.delivered()) == 1)
    call = receiver.delivered()[0]
    assert verifies(rotated, call) and not verifies(env, call)  # the env secret is not brought back


async def test_the_cli_parses_and_refuses_a_rotation_with_nothing_to_rotate(
    nats_url, unique, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COSTWISE_WEBHOOKS_NATS_URL", nats_url)
    capsys.readouterr()
    assert await secret_command(WebhooksSettings(nats_url=nats_url), "rotate", unique) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no webhook secret to rotate: create one" in err
    with pytest.raises(SystemExit):
        main(["secret", "spin", "--tenant", unique])


def test_the_secret_store_never_shows_a_secret_in_a_repr() -> None:
    from costwise.callbacks import TenantSecrets, WebhookSecret

    record = TenantSecrets(
        secrets=(WebhookSecret(secret="whsec_c2VjcmV0", created_ms=int(time.time() * 1000)),), updated_ms=0
    )
    assert "whsec_" not in repr(record) and "c2VjcmV0" not in repr(record.secrets[0])
