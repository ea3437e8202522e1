"""Type checks at the SDK boundary, so a wrong type fails before any call with a message naming
the argument (protobuf's own errors, e.g. "bad argument type for built-in operation", do not)."""

from __future__ import annotations

from typing import Any


def require_str(name: str, value: Any, *, optional: bool = False) -> None:
    if isinstance(value, str) or (optional and value is None):
        return
    expected = "a str or None" if optional else "a str"
    raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")


def require_number(name: str, value: Any) -> None:
    if not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
