"""The SDK from a virtualenv holding only the client distribution (grpcio + protobuf)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

CALLER = """
import importlib.util, sys
for heavy in ("ray", "numpy", "torch", "redis", "rewardloop.server", "rewardloop.workers",
              "rewardloop.state", "rewardloop.learning"):
    assert importlib.util.find_spec(heavy) is None, heavy + " is installed in the client-only venv"
from rewardloop.client import Client, NotFound, Signal
with Client(sys.argv[1], default_timeout=10) as client:
    rec = client.recommend("venv-user", "ucb", n=2)
    assert len(rec.items) == 2 and rec.policy == "ucb1"
    result = client.record("venv-user", rec.item_ids[0], Signal.CLICK, 1.0, decision_id=rec.decision_id)
    assert not result.duplicate and result.reward == 1.0
    assert set(client.assign("venv-user", ["color"])) == {"color"}
    try:
        client.recommend("venv-user", "no-such-surface")
    except NotFound as err:
        print("ok", err.code.name)
"""


@pytest.fixture(scope="session")
def client_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT / "client")],
        check=True,
    )
    return python


async def test_sdk_works_with_only_the_client_installed(service: object, client_only_python: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(client_only_python), "-c", CALLER, service.target,  # type: ignore[attr-defined]
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd="/",
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "ok NOT_FOUND"
