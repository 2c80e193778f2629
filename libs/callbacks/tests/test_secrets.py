"""The secrets bucket on the session's nats-server."""

from __future__ import annotations

import asyncio

import pytest

from costwise.callbacks import SecretStore, decode_secret
from costwise.contracts.subjects import WEBHOOK_SECRETS


@pytest.fixture
async def store(js) -> SecretStore:  # type: ignore[no-untyped-def]
    return SecretStore(await js.key_value(WEBHOOK_SECRETS.bucket))


async def test_create_rotate_revoke(store: SecretStore, unique: str) -> None:
    assert await store.live(unique) is None  # no entry: the webhooks service's env secrets would apply
    first = await store.create(unique)
    assert len(decode_secret(first)) == 32 and await store.live(unique) == (first,)
    with pytest.raises(ValueError, match="rotate it instead"):
        await store.create(unique)
    second = await store.rotate(unique)
    assert await store.live(unique) == (second, first)
    third = await store.rotate(unique)  # never more than two live: the oldest goes
    assert await store.live(unique) == (third, second)
    assert await store.revoke(unique, previous=True) == 1
    assert await store.live(unique) == (third,)
    assert await store.revoke(unique) == 1
    assert await store.live(unique) == ()  # an empty entry, not none
    assert not await store.seed(unique, [first])  # so a seed cannot bring a revoked secret back
    fresh = await store.create(unique)  # but a create may start again
    assert await store.live(unique) == (fresh,)


async def test_concurrent_rotations_lose_no_secret(store: SecretStore, unique: str) -> None:
    await store.create(unique)
    made = await asyncio.gather(store.rotate(unique), store.rotate(unique))
    live = await store.live(unique)
    assert live is not None and set(made) == set(live)  # compare-and-set: each rotation saw the other's


async def test_bad_input_is_refused(store: SecretStore) -> None:
    with pytest.raises(ValueError):
        await store.seed("t", ["whsec_!!"])
    with pytest.raises(ValueError):
        await store.create("not a token")
    with pytest.raises(ValueError, match="no webhook secret to rotate"):
        await store.rotate("t-nothing-here")
