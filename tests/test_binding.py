"""HVDAGENT_BIND in one process: the slices, the validation, and when nothing
is done. The binding itself runs for real in tests/test_distributed_agent.py
(the Keras 2 launch: two ranks, every thread of each checked)."""

import os

import pytest

from hvdagent._runtime import binding as _binding
from hvdagent._runtime.binding import bind_from_env, core_slice, mode_from_env


def test_slices_are_disjoint_contiguous_and_cover_every_cpu():
    for n in range(1, 13):
        cpus = list(range(100, 100 + n))
        for size in range(1, 2 * n + 2):
            slices = [core_slice(cpus, r, size) for r in range(size)]
            assert all(s for s in slices)
            if size <= n:
                assert sorted(sum(slices, [])) == cpus  # disjoint, and no CPU left idle
                assert max(map(len, slices)) - min(map(len, slices)) <= 1
                assert all(s == list(range(s[0], s[0] + len(s))) for s in slices)
            else:
                assert [s[0] for s in slices] == [cpus[r % n] for r in range(size)]


def test_mode_is_validated_with_the_received_value():
    assert mode_from_env({}) == "none"
    assert mode_from_env({"HVDAGENT_BIND": " Cores "}) == "cores"
    with pytest.raises(ValueError, match=r"HVDAGENT_BIND must be one of none, cores\. Received: HVDAGENT_BIND='core'"):
        mode_from_env({"HVDAGENT_BIND": "core"})
    with pytest.raises(ValueError, match="Received: HVDAGENT_BIND='core'"):
        bind_from_env({"HVDAGENT_BIND": "core", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "2"})


def test_a_bad_value_is_an_error_without_a_launcher_too(monkeypatch):
    from hvdagent import _hvd
    from hvdagent._hvd.local import LocalBackend
    from hvdagent._runtime.startup import Startup

    assert isinstance(_hvd._STARTUP, Startup)  # importing hvdagent hands its start-up to the seam
    monkeypatch.setenv("HVDAGENT_BIND", "all")
    with pytest.raises(ValueError, match="Received: HVDAGENT_BIND='all'"):
        LocalBackend(_hvd._STARTUP).init()
    monkeypatch.setenv("HVDAGENT_BIND", "cores")
    LocalBackend(_hvd._STARTUP).init()  # valid, and nothing to bind in one process
    assert bind_from_env() is None


def test_nothing_is_done_unless_asked_for_a_launched_rank_not_bound_by_its_launcher(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *a: calls.append(a))
    launched = {"HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2"}
    assert bind_from_env(launched) is None  # not asked
    assert bind_from_env({"HVDAGENT_BIND": "cores"}) is None  # plain python: no launcher, no local rank
    monkeypatch.setattr(_binding, "_bound_by_launcher", lambda: True)
    assert bind_from_env(dict(launched, HVDAGENT_BIND="cores")) is None  # mpirun --bind-to, Slurm, taskset
    assert calls == []
    monkeypatch.setattr(_binding, "_bound_by_launcher", lambda: False)
    mine = bind_from_env({"HVDAGENT_BIND": "cores", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert mine == core_slice(sorted(os.sched_getaffinity(0)), 1, 2)
    assert calls and all(cpus == mine for _, cpus in calls)  # every thread of this process
    assert os.getpid() in {tid for tid, _ in calls}  # the main thread (its id is the process id), and the others
