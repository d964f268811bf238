"""Inputs: any input ``model.fit`` accepts becomes this rank's ``tf.data.Dataset``.

Owns: the input policy for every input kind (``inputs``), sharding,
padding to equal step counts and ``hvdagent.shard_dataset`` (``shard``),
numpy inputs (``arrays``) and the check that every rank sees the same data
in the same order (``order``).

May import: :mod:`hvdagent._runtime`, :mod:`hvdagent._compat`, :mod:`hvdagent._hvd`.
"""
