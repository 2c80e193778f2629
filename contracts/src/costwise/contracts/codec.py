"""JSON encode/decode of wire messages with cached, typed decoders."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

__all__ = ["DecodeError", "decode", "encode"]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()

DecodeError = msgspec.DecodeError
"""Raised for invalid JSON and for payloads that do not match the contract (``ValidationError`` is a subclass)."""


@cache
def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


def encode(message: msgspec.Struct) -> bytes:
    """Serialize a wire message to JSON bytes."""
    return _encoder.encode(message)


def decode(data: bytes | str, kind: type[T]) -> T:
    """Parse and validate ``data`` as ``kind``; raises :data:`DecodeError` with a readable reason."""
    try:
        return _decoder(kind).decode(data)  # type: ignore[no-any-return,arg-type]
    except UnicodeDecodeError as exc:  # msgspec lets this one through as is
        raise DecodeError(f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
