"""The service under soak, started as production starts it: `python -m rewardloop.server`.

It runs as a child process (the supervisor, which runs the service in a session of its
own, with its local Ray and embedded Redis), so every process's memory is its own and
real, and the soak's own Python (plots, samples) adds nothing to the front's RSS. The
supervisor gets a session of its own too: a Ctrl-C in the terminal reaches only us, and
we send it the one SIGTERM that stops the service in order (a second signal would make it
kill everything at once). It also gets our death as SIGTERM, so nothing outlives a
killed soak.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardloop.workers.lifetime import die_with_parent

SERVING = re.compile(r"rewardloop serving gRPC on (\S+)")
EMBEDDED_REDIS = re.compile(r"embedded redis-server \(AOF on\) at (\S+), data in (\S+)")
# The supervisor's own stop deadline is 30 s; past it plus this, we kill it ourselves.
STOP_TIMEOUT_SECONDS = 45.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Endpoints:
    """Where the started service answers, as it reported on its output."""

    target: str  # gRPC host:port
    redis_url: str
    redis_dir: Path | None  # the embedded Redis' data dir (AOF), None with --redis-url
    metrics_url: str


class ServerProcess:
    """`python -m rewardloop.server` on 127.0.0.1, a free port, a data dir of this run's own."""

    def __init__(
        self, data_dir: Path, log_path: Path, config: str | None, redis_url: str | None, extra: Sequence[str] = ()
    ):
        self.data_dir = data_dir
        self.log_path = log_path
        self.metrics_port = free_port()
        self._config = config
        self._redis_url = redis_url
        self._extra = list(extra)  # more of the server's arguments
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def exited(self) -> int | None:
        """The exit code once the service has exited (it should not before `stop`), else None."""
        return None if self._process is None else self._process.poll()

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "rewardloop.server",
            "--address", "127.0.0.1:0",
            "--metrics-port", str(self.metrics_port),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self._config:
            command += ["--config", self._config]
        if self._redis_url:
            command += ["--redis-url", self._redis_url]
        return command + self._extra

    def start(self, timeout: float = 240.0) -> Endpoints:
        """Start it and wait for its "serving" line; raises with the log's tail if it fails."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            serving = SERVING.search(text)
            if serving:
                return self._endpoints(serving.group(1), text)
            if self._process.poll() is not None:
                raise RuntimeError(f"the service exited with {self._process.returncode}:\n{_tail(text)}")
            time.sleep(0.5)
        raise RuntimeError(f"the service did not serve within {timeout:.0f} s:\n{_tail(self.log_path.read_text())}")

    def _endpoints(self, target: str, text: str) -> Endpoints:
        embedded = EMBEDDED_REDIS.search(text)
        if self._redis_url:
            redis_url, redis_dir = self._redis_url, None
        elif embedded:
            redis_url, redis_dir = embedded.group(1), Path(embedded.group(2))
        else:
            raise RuntimeError(f"the service's log does not say where its Redis is:\n{_tail(text)}")
        return Endpoints(target, redis_url, redis_dir, f"http://127.0.0.1:{self.metrics_port}/metrics")

    def stop(self) -> int | None:
        """One SIGTERM (the graceful stop), then kill if it hangs; the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        return process.returncode


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
