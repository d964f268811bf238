"""Inputs: any input ``model.fit`` accepts becomes this rank's ``tf.data.Dataset``.

Owns: the input policy for every input kind (``inputs``) and sharding,
padding to equal step counts and ``hvdagent.shard_dataset`` (``shard``).

May import: :mod:`hvdagent._runtime`, :mod:`hvdagent._compat`, :mod:`hvdagent._hvd`.
"""
