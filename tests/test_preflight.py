"""The start-up checks' logic (hvdagent._runtime.preflight), in one process: the
messages, and which check fires before Horovod's init is ever called. The
same checks run for real across two hosts in tests/test_multihost.py."""

import socket

import pytest

from hvdagent._runtime import preflight as _preflight
from hvdagent._runtime.preflight import checked_init, duplicate_host_message, hostname_problem, mismatch_message


def test_mismatch_message_names_each_differing_package_with_hosts_and_ranks():
    same = {"hvdagent": "1", "horovod": "0.28.1", "tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.11.2"}
    other = dict(same, tensorflow="2.20.0", python="3.12.0")
    reports = [("a", same), ("a", same), ("b", other), ("b", other)]
    text = mismatch_message(reports)
    assert text.startswith("the hosts of this job run different software: tensorflow 2.21.0 on a (ranks 0-1) "
                           "but 2.20.0 on b (ranks 2-3); python 3.11.2 on a (ranks 0-1) but 3.12.0 on b (ranks 2-3).")
    assert mismatch_message([("a", same), ("b", dict(same))]) is None


def test_duplicate_host_and_hostname_checks():
    assert duplicate_host_message([("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")]) is None
    text = duplicate_host_message([("a", "0"), ("a", "1"), ("a", "0"), ("a", "1")])
    assert "host 'a' is listed more than once (ranks 0 and 2 both got local rank 0 on it)" in text
    assert "List each host once with all its slots (-H a:N or one line 'a slots=N' in the hostfile)" in text
    assert "Received: ranks per host a: 4" in text
    assert "does not resolve" in hostname_problem("no-such-host.invalid")
    assert "resolves to 127.0.0.1 (loopback)" in hostname_problem("localhost")


def _gloo_rank(monkeypatch, cross_rank, cross_size, rank="2", size="4", local="0"):
    """The environment horovodrun --gloo gives a rank (-H a:2,a:2 numbers one machine's hosts 0 and 1 of 1)."""
    for key, value in {"HOROVOD_CONTROLLER": "gloo", "HOROVOD_CROSS_RANK": cross_rank,
                       "HOROVOD_CROSS_SIZE": cross_size, "HOROVOD_RANK": rank, "HOROVOD_SIZE": size,
                       "HOROVOD_LOCAL_RANK": local}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HOROVOD_ELASTIC", raising=False)


def _never(*args, **kwargs):
    raise AssertionError("Horovod's init (or a collective) ran although a start-up check should have stopped it")


def test_host_listed_twice_is_refused_before_init(monkeypatch):
    host = socket.gethostname()
    _gloo_rank(monkeypatch, cross_rank="1", cross_size="1")
    # Without the key-value store, from horovodrun's numbering alone.
    with pytest.raises(ValueError) as err:
        checked_init(_never, _never, kv=None)
    assert str(err.value) == (
        f"hvdagent: host {host!r} is listed more than once, so Horovod would treat one machine as two. List each host "
        f"once with all its slots (-H {host}:N or one line '{host} slots=N' in the hostfile). Received: "
        f"HOROVOD_CROSS_RANK=1, HOROVOD_CROSS_SIZE=1 from horovodrun")

    # With the store: every rank's placement, so the message names the ranks that collide.
    store = {f"preflight-place-{r}": [host, str(r % 2)] for r in (0, 1, 3)}
    with pytest.raises(ValueError, match=rf"host {host!r} is listed more than once \(ranks 0 and 2 both got local rank "
                                         r"0 on it\).*Received: ranks per host .*: 4"):
        checked_init(_never, _never, kv=(lambda key, value: store.update({key: value}) is None, store.get))
    assert store["preflight-place-2"] == [host, "0"]


def test_a_correct_host_list_reaches_init(monkeypatch):
    _gloo_rank(monkeypatch, cross_rank="0", cross_size="1", rank="1", size="2", local="1")
    calls = []
    host = socket.gethostname()

    def allgather_object(obj, name):
        calls.append(name)
        return [(host, obj[1], "0"), obj]

    checked_init(lambda: calls.append("init"), allgather_object, kv=None)
    assert calls == ["init", "hvdagent_preflight_versions"]

    def other_tensorflow(obj, name):
        return [("b", dict(obj[1], tensorflow="0.0.1"), "0"), obj]

    with pytest.raises(_preflight.EnvironmentMismatchError, match=r"tensorflow 0\.0\.1 on b \(rank 0\) but "):
        checked_init(lambda: None, other_tensorflow, kv=None)
