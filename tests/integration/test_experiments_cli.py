"""rewardloop-experiments against the real service: a spec file in, the lifecycle through, errors out."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from rewardloop.client.experiments_cli import main

pytestmark = pytest.mark.cluster


async def _cli(service: Any, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    # A thread: the CLI's channel is blocking, and the service answers on this event loop.
    code = await asyncio.to_thread(main, ["--target", service.target, *argv], out)
    return code, out.getvalue()


async def test_the_cli_runs_an_experiment_from_a_spec_file(
    service: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t-cli-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": name, "layer": f"cli-{name}",
        "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 3}],
        "primaryMetric": {"source": "click"}, "ramp": [{"coverage": 0.2}, {"coverage": 1}],
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code, created = await _cli(service, "create", str(path))
    assert code == 0 and f"{name}  (draft, version 1, api)" in created
    code, started = await _cli(service, "start", name)
    assert code == 0 and "coverage now: 20.0% of 100.0%" in started
    assert "treatment  3       15.00%" in started
    code, ramped = await _cli(service, "ramp", name)
    assert code == 0 and "coverage now: 100.0%" in ramped
    code, listed = await _cli(service, "list", "--status", "running")
    assert code == 0 and any(line.split()[:2] == [name, "running"] for line in listed.splitlines())
    code, results = await _cli(service, "results", name)
    assert code == 0 and "click_conversion  primary  treatment" in results and "sample ratio: p = " in results
    code, stopped = await _cli(service, "stop", name, "--winner", "treatment", "--reason", "won")
    assert code == 0 and "winner: treatment" in stopped and "reason: won" in stopped
    code, history = await _cli(service, "history", name)
    assert [line.split()[1] for line in history.splitlines()[1:]] == ["stop", "ramp", "start", "create"]
    code, _ = await _cli(service, "delete", name)
    assert code == 0
    # Errors: the service's status and message, exit 1.
    capsys.readouterr()
    code, _ = await _cli(service, "show", name)
    assert code == 1 and capsys.readouterr().err.startswith("NOT_FOUND: name:")
    path.write_text(json.dumps({**spec, "coverage": 3}))
    code, _ = await _cli(service, "create", str(path))
    assert code == 1 and capsys.readouterr().err.startswith("INVALID_ARGUMENT: spec.coverage")
    path.write_text("{not json")
    code, _ = await _cli(service, "create", str(path))
    assert code == 1 and "create:" in capsys.readouterr().err
