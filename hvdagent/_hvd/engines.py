"""Horovod's cluster runners, for ``hvdagent.launch(engine="ray" | "spark")``.

Each is imported only when a launch asks for it. Nothing here initialises
Horovod in the caller.
"""

from __future__ import annotations

__all__ = ["ray_executor", "spark_run", "spark_next_job_group"]


def ray_executor():
    """Horovod's ``RayExecutor`` class (needs ``ray``)."""
    from horovod.ray import RayExecutor

    return RayExecutor


def spark_run():
    """``horovod.spark.run`` (needs ``pyspark`` and ``pyarrow``)."""
    import horovod.spark

    return horovod.spark.run


def spark_next_job_group() -> str:
    """The Spark job group the next ``horovod.spark.run`` of this process will use (to cancel it)."""
    from horovod.spark.driver import job_id

    return f"horovod.spark.run.{job_id.JOB_ID + 1}"
