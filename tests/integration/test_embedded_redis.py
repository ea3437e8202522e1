"""The embedded Redis: what it forks runs behind the service."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from rewardloop.workers.redis_server import (
    AOF_REWRITE_GROWTH_PERCENT,
    KEPT_PREFIX,
    REWRITE_NICENESS,
    EmbeddedRedis,
    ReplacedAof,
    aof_files,
)

MB = 1 << 20


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_the_aof_rewrite_child_runs_at_low_priority(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.mset({f"k{k}": k for k in range(20)})
        # Each key the child writes takes a second: it lives long enough to be looked at.
        client.config_set("rdb-key-save-delay", 1_000_000)
        client.bgrewriteaof()
        pid = server.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        niceness, session, group = None, None, None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [int(c) for c in children.read_text().split()]
            if found:
                niceness = os.getpriority(os.PRIO_PROCESS, found[0])
                session, group = os.getsid(found[0]), _autogroup(found[0])
                if niceness == REWRITE_NICENESS:
                    break
            time.sleep(0.02)
        client.config_set("rdb-key-save-delay", 0)
        kept = list(server.data_dir.glob(f"{KEPT_PREFIX}*"))
        for child in found:
            os.kill(child, signal.SIGKILL)  # the rewrite fails; Redis goes on with its AOF
        assert client.get("k7") == b"7"
        time.sleep(0.5)  # the watcher looks every 0.1 s: the AOF it kept is still Redis', so it stays whole
        assert kept and all(link.exists() for link in kept)
        assert client.set("after", 1)
        client.close()
    with EmbeddedRedis(tmp_path / "redis") as server:  # the AOF has every write; the kept names are gone
        client = redis.Redis.from_url(server.url)
        assert client.get("k7") == b"7" and client.get("after") == b"1"
        assert not list(server.data_dir.glob(f"{KEPT_PREFIX}*"))
        client.close()
    assert niceness == REWRITE_NICENESS
    # Niceness counts only against processes of the same scheduling group: the starter's session
    # (its autogroup), not one of Redis's own, where the child would get the group's whole share.
    assert session == os.getsid(0)
    assert group == _autogroup(os.getpid())


def test_redis_has_a_process_group_of_its_own_in_the_starters_session(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        assert server.pid is not None
        # A signal to our group (a terminal's Ctrl-C) does not reach it; it is scheduled with us.
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        assert os.getsid(server.pid) == os.getsid(0)
        assert redis.Redis.from_url(server.url).ping()


def _autogroup(pid: int) -> str | None:
    """The process's autogroup ("/autogroup-N"; None where the kernel has none)."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[0]
    except (OSError, IndexError):
        return None


def test_the_aof_is_rewritten_once_it_grew_by_the_configured_share(tmp_path: Path) -> None:
    def write(client: redis.Redis, prefix: str, total: int) -> None:
        for k in range(total // 4096):
            client.set(f"{prefix}{k}", os.urandom(4096))  # incompressible: the rewrite's size is the data's

    def forks(client: redis.Redis) -> int:
        return int(client.info("stats")["total_forks"])

    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        write(client, "base", 1 << 20)
        client.bgrewriteaof()
        deadline = time.monotonic() + 30
        while int(client.info("persistence")["aof_rewrite_in_progress"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        base = int(client.info("persistence")["aof_base_size"])
        client.config_set("auto-aof-rewrite-min-size", base // 2)  # the test's AOF is far below 64 MB
        rewrites = forks(client)

        growth = base * AOF_REWRITE_GROWTH_PERCENT // 100
        write(client, "grown", growth * 3 // 4)  # not enough yet (Redis' default 100% would rewrite)
        time.sleep(0.5)  # Redis checks every 100 ms
        assert forks(client) == rewrites
        write(client, "more", growth // 2)  # 5/4 of the growth: past it with a margin
        deadline = time.monotonic() + 10
        while forks(client) == rewrites and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forks(client) == rewrites + 1
        client.close()


def test_a_replaced_aof_file_is_freed_a_slice_at_a_time_and_a_live_one_never(tmp_path: Path) -> None:
    aof = tmp_path / "appendonly.aof"
    aof.write_bytes(b"a" * (5 * MB))
    replaced = ReplacedAof(tmp_path)
    replaced.keep()
    for _ in range(3):
        replaced.free_slice(2 * MB)
    assert aof.read_bytes() == b"a" * (5 * MB)  # still Redis' file: untouched

    old = aof.stat().st_ino
    (tmp_path / "temp-rewriteaof-bg-1.aof").write_bytes(b"b" * MB)
    os.rename(tmp_path / "temp-rewriteaof-bg-1.aof", aof)  # what Redis does when a rewrite is done
    for _ in range(2):  # a child still seen (the next rewrite's): the new AOF is kept too, once
        replaced.keep()
    links = {int(p.name.removeprefix(KEPT_PREFIX)): p for p in tmp_path.glob(f"{KEPT_PREFIX}*")}
    assert set(links) == {old, aof.stat().st_ino}
    assert all(link.stat().st_ino == ino for ino, link in links.items())  # each named after its file
    sizes = []
    while links[old].exists():
        sizes.append(links[old].stat().st_size)
        replaced.free_slice(2 * MB)
    assert sizes == [5 * MB, 3 * MB, 1 * MB, 0]
    assert aof.read_bytes() == b"b" * MB and links[aof.stat().st_ino].exists()
    replaced.drop()
    assert [p.name for p in tmp_path.iterdir()] == ["appendonly.aof"]


def test_the_aof_a_rewrite_replaced_is_freed_and_every_write_survives(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir) as server:
        client = redis.Redis.from_url(server.url)
        client.mset({f"k{k}": k for k in range(20)})
        old = {path.stat().st_ino for path in aof_files(data_dir)}
        client.config_set("rdb-key-save-delay", 20_000)  # 20 ms a key: the child lives ~0.4 s, the watcher sees it
        client.bgrewriteaof()
        kept: set[Path] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kept |= set(data_dir.glob(f"{KEPT_PREFIX}*"))
            rewriting = int(client.info("persistence")["aof_rewrite_in_progress"])
            if not rewriting and kept and not list(data_dir.glob(f"{KEPT_PREFIX}*")):
                break
            time.sleep(0.02)
        assert {int(link.name.removeprefix(KEPT_PREFIX)) for link in kept} == old  # kept while the child lived
        assert not list(data_dir.glob(f"{KEPT_PREFIX}*"))  # then freed
        assert not old & {path.stat().st_ino for path in aof_files(data_dir)}  # Redis replaced them
        client.set("after", 1)
        client.close()
    with EmbeddedRedis(data_dir) as server:
        client = redis.Redis.from_url(server.url)
        assert client.mget([f"k{k}" for k in range(20)]) == [str(k).encode() for k in range(20)]
        assert client.get("after") == b"1"
        client.close()
