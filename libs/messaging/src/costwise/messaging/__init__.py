"""Messaging: connect, provision, publish with dedup + trace context, typed consumers, dead letters."""

from ._connect import connect
from ._consume import Consumer
from ._current import ack_current, current_subject, forward_current, reject_current
from ._dead_letter import file_dead_letter, give_up, send_error_result
from ._faststream import make_broker, publish_durable, pull_subscriber
from ._lifecycle import run_until_signalled
from ._provision import cap_key_value, ensure_consumer, ensure_key_value, ensure_stream, ensure_streams, provision
from ._publish import MSG_ID, publish
from ._requeue import requeue
from ._server import NatsServer, find_nats_server
from ._slots import keep_alive, pull_into_slots

__all__ = [
    "MSG_ID",
    "Consumer",
    "NatsServer",
    "ack_current",
    "cap_key_value",
    "connect",
    "current_subject",
    "ensure_consumer",
    "ensure_key_value",
    "ensure_stream",
    "ensure_streams",
    "file_dead_letter",
    "find_nats_server",
    "forward_current",
    "give_up",
    "keep_alive",
    "make_broker",
    "provision",
    "publish",
    "publish_durable",
    "pull_into_slots",
    "pull_subscriber",
    "reject_current",
    "requeue",
    "run_until_signalled",
    "send_error_result",
]
