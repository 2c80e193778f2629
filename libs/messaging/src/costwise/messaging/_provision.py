"""Idempotent stream and consumer provisioning from the specs in ``costwise.contracts.subjects``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, KeyValueConfig, RetentionPolicy, StreamConfig
from nats.js.errors import APIError, ServiceUnavailableError

from costwise.contracts.subjects import ALL_KEY_VALUES, ALL_STREAMS, ConsumerSpec, KeyValueSpec, StreamSpec

__all__ = ["cap_key_value", "ensure_consumer", "ensure_key_value", "ensure_stream", "ensure_streams", "provision"]

_RETENTION = {
    "limits": RetentionPolicy.LIMITS,
    "workqueue": RetentionPolicy.WORK_QUEUE,
    "interest": RetentionPolicy.INTEREST,
}


def _stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1, wait_s: float = 15) -> None:
    """Create ``spec``'s stream or update it to match (never to fewer replicas than it has); retries while a
    fresh cluster elects its leader."""
    config = _stream_config(spec, replicas)
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            await js.add_stream(config)
            return
        except APIError as exc:
            if exc.err_code == 10058:  # stream name already in use with a different config
                # Every service provisions at start: one asking for fewer replicas than an operator's R3
                # provisioning made must not scale the stream down.
                current = (await js.stream_info(spec.name)).config.num_replicas or 1
                await js.update_stream(dataclasses.replace(config, num_replicas=max(replicas, current)))
                return
            if not _retryable(exc) or asyncio.get_running_loop().time() > deadline:
                raise
        except NatsTimeoutError:  # no meta leader yet: the API request goes unanswered
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.25)


def _retryable(exc: APIError) -> bool:
    # A new cluster answers "JetStream system temporarily unavailable" (503) or
    # "insufficient resources" until the meta leader and peers are up.
    return isinstance(exc, ServiceUnavailableError) or exc.code in (503, 500) or exc.err_code == 10023


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Provision every costwise stream and key-value bucket."""
    for spec in ALL_STREAMS:
        await ensure_stream(js, spec, replicas=replicas)
    for kv in ALL_KEY_VALUES:
        await ensure_key_value(js, kv, replicas=replicas)


async def ensure_key_value(js: JetStreamContext, spec: KeyValueSpec, *, replicas: int = 1) -> None:
    """Create ``spec``'s bucket if missing (an existing bucket is left as it is)."""
    config = KeyValueConfig(
        bucket=spec.bucket,
        ttl=spec.max_age_s,
        max_value_size=spec.max_value_size,
        max_bytes=spec.max_bytes,
        replicas=replicas,
        direct=spec.direct_reads,
    )
    try:
        await js.create_key_value(config)  # per-entry TTLs (allow_msg_ttl) are on by default
    except APIError as exc:
        if exc.err_code != 10058:  # already exists with another config
            raise
        await _reconcile(js, f"KV_{spec.bucket}", direct=spec.direct_reads, replicas=replicas)


async def _reconcile(js: JetStreamContext, stream: str, *, direct: bool, replicas: int) -> None:
    """Bring an existing bucket in line with its spec where that can change in place: its read path, and its
    replicas (raised, never lowered: an R1 service starting after the R3 provisioning must not undo it)."""
    config = (await js.stream_info(stream)).config
    wanted = dataclasses.replace(config, allow_direct=direct, num_replicas=max(replicas, config.num_replicas or 1))
    if wanted != config:
        await js.update_stream(wanted)


async def cap_key_value(js: JetStreamContext, spec: KeyValueSpec, max_entries: int) -> None:
    """Keep at most ``max_entries`` in ``spec``'s bucket, evicting the oldest writes first.

    A KV bucket is a stream that refuses new writes when full (discard new); a cache wants the opposite,
    so its stream is switched to discard old with a message cap.
    """
    stream = f"KV_{spec.bucket}"
    config = (await js.stream_info(stream)).config
    if config.max_msgs == max_entries and config.discard == DiscardPolicy.OLD:
        return
    config.max_msgs = max_entries
    config.discard = DiscardPolicy.OLD
    await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create or update the durable pull consumer ``spec`` (explicit ack)."""
    config = ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        inactive_threshold=spec.inactive_threshold_s,
    )
    await js.add_consumer(spec.stream, config)


async def provision(js: JetStreamContext, consumers: Iterable[ConsumerSpec] = ()) -> None:
    """Every stream and bucket, then ``consumers`` (idempotent, so any service may be the first one up)."""
    await ensure_streams(js)
    for spec in consumers:
        await ensure_consumer(js, spec)
