"""Env-driven settings: one msgspec Struct per service, validated once at start."""

from ._load import SettingsError, load

__all__ = ["SettingsError", "load"]
