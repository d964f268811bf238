"""Synchronisation: what keeps every rank's model the same.

Owns: the sync options (``options``), the epoch plan (``schedule``), the
gradient reduction (``gradients``), the learning-rate scale (``lr``), what a
distributed optimizer carries (``parts``) and the optimizer wrappers
(``optimizer``, ``keras3_optimizer``, ``keras2_optimizer``), the broadcast of
the initial state (``broadcast``), BatchNormalization statistics
(``statistics``, ``batchnorm``), the sync profiler (``profiler``) and the
check that the replicas are still one model (``replicas``).

May import: :mod:`hvdagent._runtime`, :mod:`hvdagent._compat`, :mod:`hvdagent._hvd`.
"""
