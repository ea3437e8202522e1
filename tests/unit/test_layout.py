"""The layout DESIGN.md asks for: dependencies point down, and no module grows past ~450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "workers" / "rewardloop"
FORBIDDEN = {
    "learning": ("ray", "redis", "grpc", "rewardloop.state", "rewardloop.workers", "rewardloop.server",
                 "rewardloop.demo"),
    "state": ("ray", "grpc", "rewardloop.workers", "rewardloop.server", "rewardloop.demo"),
    "simulator": ("ray", "redis", "grpc", "rewardloop.learning", "rewardloop.state", "rewardloop.workers",
                  "rewardloop.server", "rewardloop.client", "rewardloop.demo"),
}  # fmt: skip
MAX_LINES = 460


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_dependencies_point_down(layer: str) -> None:
    bad = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (PKG / layer).rglob("*.py")
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer])
    }
    assert not bad, sorted(bad)


def test_no_module_is_a_monolith() -> None:
    roots = [ROOT / "workers", ROOT / "server", ROOT / "client" / "rewardloop" / "client", ROOT / "bench"]
    long = {
        f"{p.relative_to(ROOT)}: {n}"
        for root in roots
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, sorted(long)
