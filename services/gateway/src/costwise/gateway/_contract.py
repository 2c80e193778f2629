"""The wire contract's limits, read from its msgspec types so the HTTP schema never spells them a second time.

``costwise.contracts.messages`` is the authority on what a request may hold; the pydantic models in ``schema``
take every bound from here, so a limit changed in the contract changes what the gateway accepts and documents.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi
from pydantic import Field

__all__ = ["bounded", "wire"]

# The constraints msgspec's Meta can carry that pydantic's Field takes under the same names.
_BOUNDS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")


@cache
def _fields(struct: type[msgspec.Struct]) -> dict[str, mi.Type]:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return {field.name: field.type for field in info.fields}


def wire(source: Any, field: str | None = None, part: str | None = None) -> mi.Type:
    """The contract's type of ``source`` (an ``Annotated`` alias such as ``RequestId``) or of its ``field``
    (a Struct's), without ``| None``; ``part`` steps inside: ``"item_type"``, ``"key_type"``, ``"value_type"``."""
    kind = _fields(source)[field] if field is not None else mi.type_info(source)
    if isinstance(kind, mi.UnionType):  # an optional field: its bounds are the non-None member's
        (kind,) = [member for member in kind.types if not isinstance(member, mi.NoneType)]
    if part is not None:
        kind = getattr(kind, part)
    assert isinstance(kind, mi.Type)
    return kind


def bounded(kind: mi.Type, **own: Any) -> Any:
    """A pydantic ``Field`` with ``kind``'s contract bounds, plus ``own``: bounds only the gateway sets (it may
    add some, never relax or restate one the contract has)."""
    bounds = {name: getattr(kind, name) for name in _BOUNDS if getattr(kind, name, None) is not None}
    clash = bounds.keys() & own.keys()
    if clash:
        raise ValueError(f"the contract already bounds {sorted(clash)}: read it, do not restate it")
    return Field(**bounds, **own)
