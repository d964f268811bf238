"""Argument checks shared by the whole package: one rule, one message form.

The rule: a value of the wrong *type* is a ``TypeError``; a value of the
right type outside the allowed range or set is a ``ValueError``. ``True`` and
``False`` are never numbers. Messages end in ``Received: name=value``.

>>> from hvdagent._runtime import validate
>>> validate.integer("epochs", 3, minimum=0)
3
>>> validate.integer("epochs", True, minimum=0)
Traceback (most recent call last):
...
TypeError: epochs must be an integer >= 0. Received: epochs=True
>>> validate.number("warmup_epochs", -1, minimum=0)
Traceback (most recent call last):
...
ValueError: warmup_epochs must be a number >= 0. Received: warmup_epochs=-1
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Optional

__all__ = ["integer", "number", "boolean", "one_of", "optional", "batch_size"]


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range_text(minimum, exclusive: bool) -> str:
    return f" {'>' if exclusive else '>='} {minimum}" if minimum is not None else ""


def integer(name: str, value: Any, minimum: Optional[int] = None, exclusive: bool = False, hint: str = "") -> int:
    """``value`` as an ``int``; ``TypeError`` if not an integer, ``ValueError`` if below ``minimum``."""
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer{_range_text(minimum, exclusive)}{hint}. Received: {name}={value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ValueError(f"{name} must be an integer{_range_text(minimum, exclusive)}{hint}. Received: {name}={value!r}")
    return int(value)


def number(name: str, value: Any, minimum: Optional[float] = None, exclusive: bool = False, hint: str = "") -> float:
    """``value`` as a ``float``; ``TypeError`` if not a real number, ``ValueError`` if below ``minimum``."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number{_range_text(minimum, exclusive)}{hint}. Received: {name}={value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ValueError(f"{name} must be a number{_range_text(minimum, exclusive)}{hint}. Received: {name}={value!r}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; ``TypeError`` otherwise (no truthy values)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False. Received: {name}={value!r}")
    return value


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is in ``allowed``; ``ValueError`` naming the allowed values otherwise."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}. Received: {name}={value!r}")
    return value


def optional(check, name: str, value: Any, **kwargs) -> Any:
    """``None``, or ``check(name, value, **kwargs)``."""
    return None if value is None else check(name, value, **kwargs)


def batch_size(value: Any, name: str = "batch_size") -> int:
    """A per-rank batch size: an integer >= 1."""
    return integer(name, value, minimum=1, hint=" (the per-rank batch size)")
