"""Messaging: connect, provision, publish with dedup + trace context, typed consumers, dead letters."""

from ._completion import publish_completion, usage_event
from ._connect import NatsUnreachable, connect
from ._consume import Consumer, Refusal
from ._current import (
    ack_current,
    current_message,
    current_subject,
    forward_current,
    hand_back_current,
    reject_current,
)
from ._dead_letter import file_dead_letter, give_up, send_error_result
from ._lifecycle import Service, own_connection, run, run_command
from ._provision import cap_key_value, ensure_consumer, ensure_key_value, ensure_stream, ensure_streams, provision
from ._publish import MSG_ID, publish
from ._queued import queued_first
from ._requeue import requeue
from ._server import NatsServer, find_nats_server
from ._slots import Slots, pull_while_free

__all__ = [
    "MSG_ID",
    "Consumer",
    "NatsServer",
    "NatsUnreachable",
    "Refusal",
    "Service",
    "Slots",
    "ack_current",
    "cap_key_value",
    "connect",
    "current_message",
    "current_subject",
    "ensure_consumer",
    "ensure_key_value",
    "ensure_stream",
    "ensure_streams",
    "file_dead_letter",
    "find_nats_server",
    "forward_current",
    "give_up",
    "hand_back_current",
    "own_connection",
    "provision",
    "publish",
    "publish_completion",
    "pull_while_free",
    "queued_first",
    "reject_current",
    "requeue",
    "run",
    "run_command",
    "send_error_result",
    "usage_event",
]
