"""One process, no root: how hvdagent finds mpirun's ssh session to a lost
host, which rank ends it, and what ``python -m hvdagent horovodrun`` hands
to horovodrun. The same code runs for real across hosts in
tests/test_multihost.py (a link cut under MPI with ssh's keep-alive off)."""

import stat

import pytest

from hvdagent._runtime import horovodrun as wrapper
from hvdagent._watchdog import launcher


def test_ssh_destination_and_host_matching():
    orted = ["orted", "-mca", "ess", "env", "-mca", "orte_hnp_uri", "1.0;tcp://10.0.0.1:4000"]
    cases = {
        ("/usr/bin/ssh", "-x", "node2", *orted): "node2",                        # what Open MPI 4.1 runs
        ("ssh", "-p", "2222", "-x", "root@node2.cluster", *orted): "node2.cluster",  # horovodrun -p, a user
        ("ssh", "-p2222", "-oServerAliveInterval=5", "10.0.0.12", *orted): "10.0.0.12",
        ("ssh", "-F", "/etc/cfg", "-i", "key", "-l", "me", "--", "node3", "true"): "node3",
        ("rsh", "node4", "orted"): "node4",
        ("ssh", "-x"): None,                                                    # no host
        ("python", "train.py"): None,                                           # not a remote shell
        (): None,
    }
    for argv, host in cases.items():
        assert launcher.ssh_destination(list(argv)) == host, argv
    addrs = ["10.0.0.12"]
    assert launcher.host_matches("node2", "node2", addrs)
    assert launcher.host_matches("NODE2.cluster", "node2", addrs)      # full name, other case
    assert launcher.host_matches("10.0.0.12", "node2", addrs)          # by the ranks' address
    assert launcher.host_matches("localhost", "hostX", ["127.0.0.1"])   # by resolving the name
    assert not launcher.host_matches("node3", "node2", addrs)
    assert not launcher.host_matches("10.0.0.13", "10", addrs)          # an address is not a short name


def test_rank0_hands_a_host_to_the_rank_on_mpiruns_host_only_when_all_its_ranks_are_lost(monkeypatch):
    monkeypatch.setattr(launcher, "on_mpirun_host", lambda: False)
    link = launcher.MpirunLink()
    hosts = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c"}
    states = {0: {}, 1: {"l": 1}, 2: {}, 3: {}, 4: {}}
    addresses = {1: ("10.0.0.1", 5), 2: ("10.0.0.2", 5), 3: ("10.0.0.2", 6), 4: ("10.0.0.3", 5)}
    assert link.acting_rank(False, {r: st for r, st in states.items() if r}) == 1
    assert link.acting_rank(True, states) == 0
    assert link.acting_rank(False, {2: {}, 3: {}}) is None
    link.note_lost([2], states, hosts.get, addresses)  # rank 3 of host b still beats: b is not lost
    assert link.lost_hosts == {}
    link.note_lost([1], states, hosts.get, addresses)  # a frozen rank on rank 0's host: that host is alive
    assert link.lost_hosts == {}
    link.note_lost([2, 3, 4], states, hosts.get, addresses)
    assert link.lost_hosts == {"b": ["10.0.0.2"], "c": ["10.0.0.3"]}
    assert not link.pending()  # rank 0 is not on mpirun's host here: it only hands them on
    assert "mpirun runs on a, where hvdagent ends its ssh session" in link.plan(states, hosts.get, 40)
    assert "mpirun runs on another host and has 40 s" in link.plan({0: {}, 2: {}}, hosts.get, 40)
    monkeypatch.setattr(launcher, "on_mpirun_host", lambda: True)
    here = launcher.MpirunLink()  # the rank on mpirun's host
    here.queue({"b": ["10.0.0.2"]})
    assert here.pending()
    ended = []
    monkeypatch.setattr(launcher, "end_sessions_to", lambda lost: ended.append(dict(lost)) or ["b (ssh pid 7)"])
    here.act("[rank 1 on a] hvdagent: ", 20.0)
    here.queue({"b": ["10.0.0.2"]})  # handed again by the next answer: done once
    assert ended == [{"b": ["10.0.0.2"]}] and not here.pending()


def test_no_mpirun_means_no_grace_and_no_session_ending(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK", raising=False)
    assert launcher.launcher_grace() == 0.0 and not launcher.on_mpirun_host()
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert launcher.launcher_grace() == launcher.MPI_LAUNCHER_GRACE_S
    assert not launcher.on_mpirun_host()  # pytest's parent is not mpirun
    assert launcher.end_sessions_to({"node2": ["10.0.0.2"]}) == []  # its parent has no ssh session to node2


def test_horovodrun_wrapper_sets_open_mpis_keepalive_and_takes_hosts_from_slurm(tmp_path):
    args, env, notes = wrapper.command(["--mpi", "-np", "4", "-H", "a:2,b:2", "python", "t.py"], {"PATH": "/bin"})
    assert args == ["--mpi", "-np", "4", "-H", "a:2,b:2", "python", "t.py"] and notes == []
    assert {k: env[k] for k in wrapper.OPEN_MPI_KEEPALIVE} == {
        "OMPI_MCA_oob_tcp_keepalive_time": "10", "OMPI_MCA_oob_tcp_keepalive_intvl": "5",
        "OMPI_MCA_oob_tcp_keepalive_probes": "3"}
    _, env, _ = wrapper.command(["python", "t.py"], {"OMPI_MCA_oob_tcp_keepalive_time": "60"})
    assert env["OMPI_MCA_oob_tcp_keepalive_time"] == "60"  # the user's value is kept
    assert wrapper.tasks_per_node("2(x3),1") == [2, 2, 2, 1] and wrapper.tasks_per_node("4") == [4]
    with pytest.raises(ValueError, match=r"Received: SLURM_TASKS_PER_NODE='2\(x'"):
        wrapper.tasks_per_node("2(x")
    with pytest.raises(ValueError, match="usage: python -m hvdagent horovodrun"):
        wrapper.command(["--mpi"], {})
    # Inside an allocation: Slurm's scontrol expands the node list.
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames n[1-2]' ] && printf 'n1\\nn2\\n'\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"PATH": f"{tmp_path}:/bin", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]",
             "SLURM_TASKS_PER_NODE": "2(x2)"}
    args, _, notes = wrapper.command(["--mpi", "python", "t.py"], slurm)
    assert args == ["-np", "4", "-H", "n1:2,n2:2", "--mpi", "python", "t.py"]
    assert notes == ["hvdagent: hosts from Slurm's allocation: -np 4 -H n1:2,n2:2"]
    args, _, _ = wrapper.command(["-np", "2", "python", "t.py"], slurm)
    assert args == ["-H", "n1:2,n2:2", "-np", "2", "python", "t.py"]  # -np given: kept
    args, _, notes = wrapper.command(["-H", "x:1", "python", "t.py"], slurm)
    assert args == ["-H", "x:1", "python", "t.py"] and notes == []  # hosts given: Slurm's not used
    with pytest.raises(ValueError, match="SLURM_TASKS_PER_NODE"):
        wrapper.command(["python", "t.py"], dict(slurm, SLURM_TASKS_PER_NODE=""))
    # The command line: a usage error exits 2 with the reason, before anything starts.
    assert wrapper.main([]) == 2


def test_horovodrun_usage_error_is_printed(capsys):
    assert wrapper.main(["--mpi", "--verbose"]) == 2
    assert "usage: python -m hvdagent horovodrun" in capsys.readouterr().err
