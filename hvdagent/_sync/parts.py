"""What a distributed optimizer carries, and the one way to reach it.

A distributed optimizer (Keras 3 wrapper or tf_keras instance) carries one
:class:`Parts`: its gradient sync, its learning-rate scale and the schedule
both read. :func:`parts_of` is the only accessor; nothing else reads the
attribute it is stored under.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from hvdagent._sync.gradients import GradientSync
from hvdagent._sync.lr import LRScale
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.schedule import Schedule

__all__ = ["Parts", "parts_of", "is_distributed", "attach"]

_ATTR = "_hvdagent"


@dataclasses.dataclass(frozen=True)
class Parts:
    """A distributed optimizer's gradient sync, learning-rate scale and schedule."""

    sync: GradientSync
    lr: LRScale
    schedule: Schedule

    @classmethod
    def create(cls, options: SyncOptions, tag: str = "") -> "Parts":
        """New parts; ``tag`` names this optimizer's collectives (see :class:`GradientSync`)."""
        schedule = Schedule()
        return cls(GradientSync(options, schedule, tag=tag), LRScale(schedule), schedule)

    def build(self, variables) -> None:
        """Create the variables of the sync and the schedule (outside any ``tf.function``)."""
        self.sync.build(variables)


def attach(optimizer: Any, parts: Parts) -> None:
    """Make ``optimizer`` carry ``parts`` (the optimizer wrappers call it once)."""
    object.__setattr__(optimizer, _ATTR, parts)


def parts_of(optimizer: Any) -> Optional[Parts]:
    """The :class:`Parts` of a distributed optimizer, else None."""
    return getattr(optimizer, _ATTR, None) if optimizer is not None else None


def is_distributed(optimizer: Any) -> bool:
    """True if ``optimizer`` was made distributed by hvdagent."""
    return parts_of(optimizer) is not None
