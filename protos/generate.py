"""Generate the Python stubs for protos/rewardloop/v1 into client/rewardloop/v1.

`--check` generates into a scratch folder and fails if the committed stubs differ,
so CI catches a .proto edit that was not followed by `make protos`.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("rewardloop/v1")
OUT_ROOT = ROOT / "client"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> None:
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> set[str]:
    return {p.name for p in (root / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        fresh_names = generated_files(fresh)
        committed_names = generated_files(OUT_ROOT) if (OUT_ROOT / PACKAGE).exists() else set()
        if check:
            stale = sorted(fresh_names ^ committed_names)
            stale += sorted(
                n
                for n in fresh_names & committed_names
                if not filecmp.cmp(fresh / PACKAGE / n, OUT_ROOT / PACKAGE / n, shallow=False)
            )
            if stale:
                print(f"stale generated stubs: {', '.join(stale)}; run `make protos`", file=sys.stderr)
                return 1
            print(f"generated stubs are fresh ({len(fresh_names)} files)")
            return 0
        for name in committed_names - fresh_names:
            (OUT_ROOT / PACKAGE / name).unlink()
        for name in fresh_names:
            shutil.copyfile(fresh / PACKAGE / name, OUT_ROOT / PACKAGE / name)
        print(f"wrote {len(fresh_names)} files to {OUT_ROOT / PACKAGE}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
