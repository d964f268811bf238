"""The agent: ``DistributedAgent``'s fit / evaluate / predict / save.

Owns: the user-facing training path (``agent``), the one place the user's
model is patched while the agent runs (``steps``), the check that every
optimizer update of a traced step is a distributed one (``updates``), the callbacks ``fit``
runs and their order (``callbacks``), checkpoints (``checkpoint``), elastic
runs (``elastic``) and sharded prediction (``predict``).

May import: :mod:`hvdagent._data`, :mod:`hvdagent._sync`,
:mod:`hvdagent._watchdog` and everything below them.
"""
