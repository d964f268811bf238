"""How gradients are synchronised: a frozen value, validated once, handed down."""

from __future__ import annotations

import dataclasses
from typing import Optional

from hvdagent import _hvd
from hvdagent._runtime import validate

__all__ = ["SyncOptions", "COMPRESSIONS"]

COMPRESSIONS = (None, "fp16", "bf16")


@dataclasses.dataclass(frozen=True)
class SyncOptions:
    """How gradients are synchronised (see :func:`hvdagent.DistributedOptimizer`).

    Example:
        >>> SyncOptions(op="sum").op
        'sum'
        >>> SyncOptions(op="max")
        Traceback (most recent call last):
        ...
        ValueError: op must be one of ('average', 'sum', 'adasum'). Received: op='max'
    """

    op: str = "average"
    compression: Optional[str] = None
    backward_passes_per_step: int = 1
    sparse_as_dense: bool = False
    gradient_predivide_factor: float = 1.0
    sync_every: int = 1

    def __post_init__(self):
        validate.one_of("op", self.op, _hvd.OPS)
        validate.one_of("compression", self.compression, COMPRESSIONS)
        validate.integer("backward_passes_per_step", self.backward_passes_per_step, minimum=1)
        validate.boolean("sparse_as_dense", self.sparse_as_dense)
        validate.number("gradient_predivide_factor", self.gradient_predivide_factor, minimum=0, exclusive=True)
        validate.integer("sync_every", self.sync_every, minimum=1)
        if self.gradient_predivide_factor != 1.0 and self.op != "average":
            raise ValueError(
                "gradient_predivide_factor only applies to op='average'. "
                f"Received: gradient_predivide_factor={self.gradient_predivide_factor!r}, op={self.op!r}"
            )
        if self.sync_every > 1 and (self.backward_passes_per_step > 1 or self.op != "average"):
            raise ValueError(
                "sync_every > 1 (local SGD) averages weights instead of gradients; it cannot be combined with "
                f"backward_passes_per_step > 1 or op={self.op!r}. Received: sync_every={self.sync_every}, "
                f"backward_passes_per_step={self.backward_passes_per_step}, op={self.op!r}"
            )

    def config(self) -> dict:
        return dataclasses.asdict(self)
