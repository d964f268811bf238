"""Failure detection: no job hangs on a lost peer or a stalled rank.

Owns: the heartbeat thread and its verdicts (``watchdog``), its connection to
``fit`` (``heartbeat``, a callback), pauses for long rank-0 work
(``pause``: ``hvdagent.watchdog_paused``), where the main thread is
(``main_thread``) and what it reads from the environment (``env``).

May import: :mod:`hvdagent._runtime`, :mod:`hvdagent._compat`, :mod:`hvdagent._hvd`.
"""
