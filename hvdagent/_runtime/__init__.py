"""Process start-up and the package's shared utilities.

Owns: the start-up checks across ranks (``preflight``), CPU binding
(``binding``) and their hand-off to the seam (``startup``), the process
queries of the public API (``process``: ``hvdagent.init``, ``rank``, ...),
``hvdagent doctor`` (``doctor``), ``hvdagent horovodrun``: horovodrun with
the launcher settings hvdagent needs (``horovodrun``), rank-aware logging (``log``) and argument
validation (``validate``).

May import: :mod:`hvdagent._hvd` and :mod:`hvdagent._compat` (layer rule in
``tests/test_architecture.py``); every area above may import it.
"""
