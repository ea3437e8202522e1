"""``rewardloop-experiments``: manage experiments from a terminal (the Admin API's experiment RPCs).

    rewardloop-experiments list [--status running]
    rewardloop-experiments create spec.json          # an ExperimentSpec in protobuf's JSON form
    rewardloop-experiments start ranker_v2
    rewardloop-experiments ramp ranker_v2 [--coverage 0.5]
    rewardloop-experiments show ranker_v2
    rewardloop-experiments history ranker_v2
    rewardloop-experiments results ranker_v2         # the comparison table, SRM, planning, monitor
    rewardloop-experiments plot ranker_v2 --out effect.png   # effect over time (needs matplotlib)
    rewardloop-experiments stop ranker_v2 --winner treatment --reason "won on clicks"

``--target`` (or ``REWARDLOOP_TARGET``) names the service, ``--token`` (or ``REWARDLOOP_ADMIN_TOKEN``)
an admin key. Errors print the service's message and exit 1 (2 for bad command lines).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from rewardloop.client.experiment_plot import PlotUnavailable, plot_effects
from rewardloop.v1 import admin_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp

STATUS = {
    "draft": xp.EXPERIMENT_STATUS_DRAFT,
    "running": xp.EXPERIMENT_STATUS_RUNNING,
    "paused": xp.EXPERIMENT_STATUS_PAUSED,
    "stopped": xp.EXPERIMENT_STATUS_STOPPED,
}
STATUS_NAME = {number: name for name, number in STATUS.items()}
TIMEOUT = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardloop-experiments", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default=os.environ.get("REWARDLOOP_TARGET", "localhost:50051"))
    parser.add_argument("--token", default=os.environ.get("REWARDLOOP_ADMIN_TOKEN", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="experiments, with status and coverage")
    listing.add_argument("--status", choices=sorted(STATUS))
    listing.add_argument("--layer", default="")
    for name in ("create", "update"):
        command = commands.add_parser(name, help=f"{name} from an ExperimentSpec JSON file ('-': stdin)")
        command.add_argument("spec")
        command.add_argument("--expected-version", type=int, default=0)
    for name in ("show", "results", "start", "pause", "delete", "history", "plot"):
        command = commands.add_parser(name)
        command.add_argument("name")
        command.add_argument("--expected-version", type=int, default=0)
        command.add_argument("--reason", default="")
        if name == "plot":
            command.add_argument("--out", default="", help="the PNG to write; default: <name>-effect.png")
    stop = commands.add_parser("stop")
    stop.add_argument("name")
    stop.add_argument("--expected-version", type=int, default=0)
    stop.add_argument("--reason", default="")
    stop.add_argument("--winner", default="")
    ramp = commands.add_parser("ramp", help="to --coverage, or to the ramp schedule's next step")
    ramp.add_argument("name")
    ramp.add_argument("--expected-version", type=int, default=0)
    ramp.add_argument("--coverage", type=float, default=0.0)
    return parser


def _time(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def describe(experiment: xp.Experiment, out: TextIO) -> None:
    """One experiment: definition, state and allocation."""
    spec = experiment.spec
    out.write(
        f"{spec.name}  ({STATUS_NAME.get(experiment.status, '?')}, version {experiment.version}, {experiment.source})\n"
    )
    if experiment.reason:
        out.write(f"  reason: {experiment.reason}\n")
    if experiment.winner:
        out.write(f"  winner: {experiment.winner}\n")
    out.write(
        f"  layer: {spec.layer or '(its own)'}   coverage now: {experiment.coverage:.1%} of {spec.coverage:.1%}\n"
    )
    out.write(f"  created {_time(experiment.created_at_ms)}  started {_time(experiment.started_at_ms)}"
              f"  stopped {_time(experiment.stopped_at_ms)}\n")  # fmt: skip
    rows = [["variant", "weight", "users' share"]]
    rows += [[a.variant, f"{a.weight:g}", f"{a.coverage:.2%}"] for a in experiment.allocation]
    _table(rows, out)
    if spec.HasField("primary_metric"):
        metrics = [spec.primary_metric, *spec.guardrails]
        out.write("  metrics: " + ", ".join(m.name or f"{m.source}_{m.aggregate}" for m in metrics) + "\n")


def _number(value: float, digits: int = 4) -> str:
    return "-" if value != value else f"{value:.{digits}g}"  # NaN: not computed yet


def show_results(results: xp.ExperimentResults, out: TextIO) -> None:
    """The results table: users per variant, each comparison, the sample-ratio check, planning."""
    describe(results.experiment, out)
    _table([["variant", "users", "expected share"]]
           + [[v.variant, str(v.users), f"{v.expected_share:.1%}"] for v in results.variants], out)  # fmt: skip
    rows = [
        ["metric", "role", "variant", "control", "variant mean", "lift", "interval (lift)", "p", "p adj", "verdict"]
    ]
    for c in results.comparisons:
        interval = f"[{c.relative_ci_low:+.2%}, {c.relative_ci_high:+.2%}] at {c.confidence:.1%}" if c.test else "-"
        rows.append([
            c.metric, c.role, c.variant, _number(c.control_mean), _number(c.variant_mean),
            f"{c.relative:+.2%}" if c.test else "-", interval, _number(c.p_value, 3),
            _number(c.adjusted_p_value, 3), c.verdict,
        ])  # fmt: skip
    _table(rows, out)
    srm = "MISMATCH: do not trust the comparisons" if results.sample_ratio_mismatch else "ok"
    if results.sequential.sample_ratio_suspended:
        srm = "not checked: the split changed while running"
    out.write(f"sample ratio: p = {results.sample_ratio_p_value:.3g} ({srm})\n")
    out.write(f"planning: {results.planning.message}\n")
    show_sequential(results.sequential, out)


def show_sequential(reading: xp.SequentialResults, out: TextIO) -> None:
    """The monitor's reading: the tests that stay valid however often they are read."""
    if not reading.looked_at_ms:
        out.write("monitor: not looked at yet\n")
        return
    out.write(f"monitor (last look {_time(reading.looked_at_ms)}; valid at any look):\n")
    if reading.primary:
        planned = reading.planned_users_per_variant
        rows = [["primary", "looks", "information", "z", "boundary", "verdict"]]
        rows += [[p.variant, str(p.looks), f"{p.information_fraction:.0%} of {planned:,.0f}", f"{p.z:+.2f}",
                  f"±{p.boundary:.2f}", p.verdict + (f" (look {p.decided_look})" if p.decided_look else "")]
                 for p in reading.primary]  # fmt: skip
        _table(rows, out)
    if reading.guardrails:
        rows = [["guardrail", "variant", "always-valid p", "level", "difference bound", "regression"]]
        rows += [[g.metric, g.variant, _number(g.p_value, 3), _number(g.alpha, 3),
                  f"< {g.ci_high:.4g}" if g.ci_high != float("inf") else f"> {g.ci_low:.4g}",
                  "YES" if g.regression else "no"] for g in reading.guardrails]  # fmt: skip
        _table(rows, out)
    srm = "MISMATCH" if reading.sample_ratio_mismatch else "ok"
    if reading.sample_ratio_suspended:
        srm = "not checked since the split changed"
    out.write(f"sample ratio (sequential): p = {reading.sample_ratio_p_value:.3g} ({srm})\n")
    if reading.ramp_gate:
        out.write(f"ramp: {reading.ramp_gate}\n")


def _spec(path: str) -> xp.ExperimentSpec:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json_format.Parse(text, xp.ExperimentSpec())


def run(args: argparse.Namespace, stub: Any, out: TextIO, metadata: Sequence[tuple[str, str]]) -> None:
    call: dict[str, Any] = {"timeout": TIMEOUT, "metadata": metadata}
    version = getattr(args, "expected_version", 0)
    if args.command == "list":
        status = STATUS[args.status] if args.status else xp.EXPERIMENT_STATUS_UNSPECIFIED
        request = xp.ListExperimentsRequest(status=status, layer=args.layer)
        listed = stub.ListExperiments(request, **call).experiments
        rows = [["name", "status", "layer", "coverage", "variants", "version", "source"]]
        rows += [
            [e.spec.name, STATUS_NAME.get(e.status, "?"), e.spec.layer or "-", f"{e.coverage:.0%}",
             "/".join(a.variant for a in e.allocation), str(e.version), e.source]
            for e in listed
        ]  # fmt: skip
        _table(rows, out)
    elif args.command in ("create", "update"):
        spec = _spec(args.spec)
        if args.command == "create":
            describe(stub.CreateExperiment(xp.CreateExperimentRequest(spec=spec), **call), out)
        else:
            describe(
                stub.UpdateExperiment(xp.UpdateExperimentRequest(spec=spec, expected_version=version), **call), out
            )
    elif args.command == "history":
        changes = stub.GetExperimentHistory(xp.ExperimentHistoryRequest(name=args.name), **call).changes
        rows = [["version", "action", "at", "status", "coverage"]]
        rows += [[str(c.version), c.action, _time(c.at_ms), STATUS_NAME.get(c.experiment.status, "?"),
                  f"{c.experiment.coverage:.0%}"] for c in changes]  # fmt: skip
        _table(rows, out)
    elif args.command == "stop":
        request = xp.StopExperimentRequest(
            name=args.name, expected_version=version, reason=args.reason, winner=args.winner
        )
        describe(stub.StopExperiment(request, **call), out)
    elif args.command == "ramp":
        request = xp.RampExperimentRequest(name=args.name, expected_version=version, coverage=args.coverage)
        describe(stub.RampExperiment(request, **call), out)
    elif args.command == "delete":
        stub.DeleteExperiment(xp.ExperimentRequest(name=args.name, expected_version=version), **call)
        out.write(f"deleted {args.name}\n")
    else:
        request = xp.ExperimentRequest(name=args.name, expected_version=version, reason=args.reason)
        if args.command == "results":
            show_results(stub.GetExperimentResults(request, **call), out)
            return
        if args.command == "plot":
            path = plot_effects(stub.GetExperimentResults(request, **call), args.out or f"{args.name}-effect.png")
            out.write(f"wrote {path}\n")
            return
        method = {"show": stub.GetExperiment, "start": stub.StartExperiment, "pause": stub.PauseExperiment}
        describe(method[args.command](request, **call), out)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.target) as channel:
        try:
            run(args, admin_pb2_grpc.AdminStub(channel), out, metadata)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        except (OSError, json_format.ParseError, PlotUnavailable) as err:
            print(f"{args.command}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
