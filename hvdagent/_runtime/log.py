"""Rank-aware logging: a ``[rank n]`` prefix, and rank 0 only by default.

Library code logs through :func:`get_logger`; it never configures the root
logger. Records from ranks other than 0 are dropped unless the environment
variable ``HVDAGENT_LOG_ALL_RANKS=1`` is set (or ``all_ranks=True`` is passed
to a call: ``log.info("...", extra={"all_ranks": True})``).
"""

from __future__ import annotations

import logging
import os

from hvdagent import _hvd


def _rank() -> int:
    if _hvd.is_initialized():
        return _hvd.rank()
    rank = _hvd.launcher_rank()
    return 0 if rank is None else rank


class RankAdapter(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[rank {_rank()}] {msg}", kwargs

    def log(self, level, msg, *args, **kwargs):
        extra = kwargs.pop("extra", None) or {}
        all_ranks = extra.get("all_ranks") or os.environ.get("HVDAGENT_LOG_ALL_RANKS") == "1"
        if _rank() != 0 and not all_ranks:
            return
        super().log(level, msg, *args, **kwargs)


def get_logger(name: str) -> RankAdapter:
    """A logger whose records carry the rank and come from rank 0 only."""
    return RankAdapter(logging.getLogger(name), {})
