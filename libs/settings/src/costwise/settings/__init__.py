"""Env-driven settings: one msgspec Struct per service, validated once at start."""

from ._ids import process_id
from ._load import SettingsError, load

__all__ = ["SettingsError", "load", "process_id"]
