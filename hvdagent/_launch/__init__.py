"""``hvdagent.launch``: run a function on several processes, from a notebook or script.

Owns: the entry point and its engines' dispatch (``api``), the local engine
(``local``), Ray (``ray``), Spark (``spark``), the worker side (``worker``)
and the errors a launch raises (``errors``).

May import: every area below it; nothing imports it but the package itself.
"""
