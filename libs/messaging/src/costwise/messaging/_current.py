"""The message being handled (task-local), and what a handler may do with it: ack, forward, refuse, or
let the consumer retry it."""

from __future__ import annotations

import logging
from contextvars import ContextVar

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from costwise.contracts import Checkpoint, DecodeError, ErrorCode, Job, decode, subjects
from costwise.contracts.subjects import ConsumerSpec

from ._dead_letter import give_up
from ._publish import publish

__all__ = [
    "ack_current",
    "answers_caller",
    "current_message",
    "current_subject",
    "forward_current",
    "hand_back_current",
    "reject_current",
]

log = logging.getLogger("costwise.messaging")

# Task-local: every message is handled in a task of its own, which sees only its own message.
_current: ContextVar[Msg] = ContextVar("costwise_current_message")


def handling(msg: Msg) -> None:
    """Make ``msg`` the current message of the calling task (the delivering loop calls this)."""
    _current.set(msg)


async def ack_current() -> None:
    """Ack the message being handled: call it only once its outcome is durably stored."""
    await _current.get().ack()


def current_message() -> Msg:
    """The message being handled, raw: its delivery count (``metadata.num_delivered``), stream sequence and
    headers, and for handlers that retry on their own schedule, ``nak(delay=...)`` / ``in_progress()``."""
    return _current.get()


def current_subject() -> str:
    """The subject of the message being handled (e.g. to check it names the tenant its payload does)."""
    return _current.get().subject


async def forward_current(js: JetStreamContext, subject: str, *, msg_id: str) -> None:
    """Publish the message being handled, as received (no re-encoding), to ``subject`` and wait for its PubAck."""
    await publish(js, subject, _current.get().data, msg_id=msg_id)


async def hand_back_current(js: JetStreamContext, job: Job, checkpoint: Checkpoint) -> None:
    """Queue the job being handled again, carrying ``checkpoint``, then ack this delivery: the next worker continues
    where this one stopped. A new message, not a nak, because the checkpoint must travel with it; published first,
    so a crash in between leaves two copies (one completion: its msg-id) and never none."""
    # Per delivery: this delivery handed back again (after a crash before the ack) is stored once.
    seq = _current.get().metadata.sequence.stream
    msg_id = subjects.dedup_id(job.request.tenant, job.job_id, "ckpt", str(seq))
    await publish(js, subjects.jobs(job.pool), msgspec.structs.replace(job, checkpoint=checkpoint), msg_id=msg_id)
    await ack_current()


async def reject_current(js: JetStreamContext, *, service: str, code: ErrorCode, reason: str) -> None:
    """Refuse the message being handled: dead letter + typed error result to its caller, then terminate."""
    await poison(js, _current.get(), service, code, reason)


async def poison(js: JetStreamContext, msg: Msg, service: str, code: ErrorCode, why: str) -> None:
    await give_up(
        js,
        msg,
        service=service,
        code=code,
        reason=why,
        tenant_hint=subjects.tenant_of(msg.subject),
        reply=answers_caller(msg.subject),
    )


def answers_caller(subject: str) -> bool:
    """Whether a message refused on ``subject`` is owed an error result: requests, jobs and completions are
    (someone waits for their answer); results, usage events and webhook outboxes are not (the request already
    has its result, which an error must not replace)."""
    try:
        stream = subjects.stream_of(subject)
    except KeyError:
        return True
    return stream not in (subjects.RESULTS, subjects.USAGE, subjects.WEBHOOKS)


def tenant_mismatch(subject: str, payload: object) -> str | None:
    """Why ``payload`` may not be handled on ``subject``: it names another tenant than the subject does.

    The subject is the authority (NATS permissions are per subject); a payload is whatever its publisher
    wrote, and budgets, the ledger and cache keys would otherwise trust it.
    """
    authority = subjects.tenant_of(subject)
    claimed = getattr(payload, "tenant", None)
    if authority is None or claimed is None or claimed == authority:
        return None
    return f"the payload names tenant {claimed!r} but was published on tenant {authority!r}'s subject"


def decode_failure(subject: str, data: bytes) -> str:
    """Why ``data`` is no valid payload for ``subject``: msgspec names the offending field, e.g. "at `$.messages`"."""
    try:
        decode(data, subjects.payload_type(subject))
    except DecodeError as exc:
        return f"invalid {subjects.stream_of(subject).name} payload: {exc}"
    return "payload failed to decode"


async def retry_or_give_up(
    js: JetStreamContext, msg: Msg, service: str, spec: ConsumerSpec | None, exc: Exception, *, quiet: bool = False
) -> None:
    """A handler raised: redeliver with backoff, or, on the consumer's last delivery, dead-letter it.

    ``quiet``: the caller logged the failure once already (a batch), so a retry is not logged per message.
    """
    delivered = msg.metadata.num_delivered
    if spec is None or spec.max_deliver < 0 or delivered < spec.max_deliver:
        if not quiet:
            log.exception("handler failed on delivery %d of %s; retrying", delivered, msg.subject)
        await msg.nak(delay=min(0.1 * 2**delivered, 5.0))
        return
    why = f"failed on all {delivered} deliveries; last error: {type(exc).__name__}: {exc}"
    await poison(js, msg, service, ErrorCode.MAX_DELIVERIES_EXCEEDED, why)
