"""``import hvdagent as hvd``: Horovod's Keras (and TF2) API over hvdagent's core.

Owns: Horovod's ops, compressors and argument normalisation (``api``),
``hvd.DistributedOptimizer`` with Horovod's signature (``optimizer``), the
eager collectives (``collectives``), ``hvd.load_model`` (``load``) and the
TF2 custom-loop tapes ``hvd.DistributedGradientTape`` and
``hvd.PartialDistributedGradientTape`` (``tape``). The
public ``hvdagent.callbacks`` and ``hvdagent.elastic`` belong to this layer.

May import: every area below it (:mod:`hvdagent._agent`, :mod:`hvdagent._sync`,
...); nothing below imports it.
"""
