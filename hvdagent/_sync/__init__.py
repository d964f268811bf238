"""Synchronisation: what keeps every rank's model the same.

Owns: the sync options (``options``), the epoch plan (``schedule``), the
gradient reduction (``gradients``), the learning-rate scale (``lr``), what a
distributed optimizer carries (``parts``) and the optimizer wrappers
(``optimizer``, ``keras3_optimizer``, ``keras2_optimizer``), the broadcast of
the initial state (``broadcast``), BatchNormalization statistics
(``statistics``, ``batchnorm``), the sync profiler (``profiler``), the
check that the replicas are still one model (``replicas``), PowerSGD
compression (``powersgd``), the cost model of sync methods (``cost_model``)
and the advisor behind ``python -m hvdagent advise`` (``advisor``).

May import: :mod:`hvdagent._runtime`, :mod:`hvdagent._compat`, :mod:`hvdagent._hvd`.
"""
