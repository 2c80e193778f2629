"""The SSRF guard lives in :mod:`costwise.callbacks.guard` (the gateway applies it at submission too)."""

from costwise.callbacks.guard import CallbackRefused, Guard, Resolver, Target, system_resolver

__all__ = ["CallbackRefused", "Guard", "Resolver", "Target", "system_resolver"]
