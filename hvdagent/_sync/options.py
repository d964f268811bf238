"""How gradients are synchronised: a frozen value, validated once, handed down."""

from __future__ import annotations

import dataclasses
from typing import Any

from hvdagent import _hvd
from hvdagent._runtime import validate
from hvdagent._sync.powersgd import PowerSGD

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
    compression: Any = None  # None, "fp16", "bf16" or a PowerSGD
    backward_passes_per_step: int = 1
    sparse_as_dense: bool = False
    gradient_predivide_factor: float = 1.0
    sync_every: int = 1

    def __post_init__(self):
        validate.one_of("op", self.op, _hvd.OPS)
        if isinstance(self.compression, PowerSGD):
            _check_powersgd(self)
        else:
            validate.one_of("compression", self.compression, COMPRESSIONS + ("hvdagent.PowerSGD(...)",))
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
        """A JSON-able dict; :meth:`from_config` reads it back."""
        out = dataclasses.asdict(self)
        if isinstance(self.compression, PowerSGD):
            out["compression"] = {"class_name": "PowerSGD", "config": self.compression.config()}
        return out

    @classmethod
    def from_config(cls, config: dict) -> "SyncOptions":
        """The options :meth:`config` wrote.

        Example:
            >>> opts = SyncOptions(compression=PowerSGD(rank=2))
            >>> SyncOptions.from_config(opts.config()) == opts
            True
        """
        config = dict(config)
        c = config.get("compression")
        if isinstance(c, dict) and c.get("class_name") == "PowerSGD":
            config["compression"] = PowerSGD(**c["config"])
        return cls(**config)


def _check_powersgd(options: SyncOptions) -> None:
    """PowerSGD replaces the every-step average: the options of other ways to sync do not apply."""
    for name, needed in (("op", "average"), ("sync_every", 1), ("gradient_predivide_factor", 1.0)):
        value = getattr(options, name)
        if value != needed:
            raise ValueError(
                f"compression=PowerSGD(...) averages compressed gradients every step: it needs {name}={needed!r} "
                "(sums, Adasum, local SGD and the fp16 pre-division are other ways to sync). "
                f"Received: compression={options.compression!r}, {name}={value!r}"
            )
