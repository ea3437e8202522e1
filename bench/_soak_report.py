"""The soak's figures: one row per interval, the line printed for it, the summary and the verdict.

A row is a flat mapping (interval, time, load figures, every sampled series), so the CSV,
the JSON and the plot read the same thing. The criteria are issue 10's: no errors; the
front's and each shard's RSS and Redis' used_memory level off (growth over the last third of
the measured run at most 2% of the value); no interval after the warm-up with a p99 over
250 ms.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _measure import percentile
from _soak_load import RPCS, SHED, Tally

MAX_GROWTH_PERCENT = 2.0
MAX_P99_MS = 250.0
MB = 1024 * 1024

Row = dict[str, Any]


def interval_row(tally: Tally, sample: Mapping[str, float], t_s: float, interval: float, warmup: float) -> Row:
    """Everything known about one interval: what the load saw during it, what was read at its end."""
    row: Row = {"interval": tally.index, "t_s": round(t_s, 3), "warmup": int(t_s <= warmup + 1e-6)}
    for rpc in RPCS:
        key = rpc.lower()
        latencies = tally.latencies[rpc]
        row[f"{key}_ok"] = tally.ok[rpc]
        row[f"{key}_per_s"] = tally.ok[rpc] / interval
        row[f"{key}_p50_ms"] = percentile(latencies, 50) * 1000
        row[f"{key}_p99_ms"] = percentile(latencies, 99) * 1000
        row[f"{key}_max_ms"] = max(latencies, default=math.nan) * 1000
    row["errors"] = tally.error_count
    row["shed"] = tally.errors.get(SHED, 0)
    row["in_flight"] = tally.in_flight
    row["first_error"] = tally.first_error
    for key, count in sorted(tally.errors.items()):
        row["err_" + key.replace(" ", "_")] = count
    row.update(sample)
    return row


def shard_series(rows: Sequence[Row]) -> list[str]:
    return sorted({k for row in rows for k in row if k.startswith("rss_shard-")}, key=lambda k: int(k.split("-")[1]))


# The line printed per interval: (header, width, cell).
def _mb(key: str) -> Any:
    return lambda row: _num(row.get(key, math.nan) / MB, 0)


COLUMNS: list[tuple[str, int, Any]] = [
    ("t s", 6, lambda row: f"{row['t_s']:.0f}" + ("w" if row["warmup"] else " ")),
    ("rec/s", 6, lambda row: _num(row["recommend_per_s"], 0)),
    ("rcd/s", 6, lambda row: _num(row["record_per_s"], 0)),
    ("rec p50", 7, lambda row: _num(row["recommend_p50_ms"], 1)),
    ("rec p99", 7, lambda row: _num(row["recommend_p99_ms"], 1)),
    ("rcd p50", 7, lambda row: _num(row["record_p50_ms"], 1)),
    ("rcd p99", 7, lambda row: _num(row["record_p99_ms"], 1)),
    ("max ms", 7, lambda row: _num(max(row["recommend_max_ms"], row["record_max_ms"]), 0)),
    ("err", 5, lambda row: str(row["errors"] - row["shed"])),
    ("shed", 5, lambda row: str(row["shed"])),
    ("front", 6, _mb("rss_front")),
    ("shards", 11, lambda row: "/".join(_num(row[k] / MB, 0) for k in shard_series([row])) or "-"),
    ("redis", 6, _mb("rss_redis")),
    ("ray", 6, _mb("rss_ray")),
    ("r.used", 6, _mb("redis_used_memory")),
    ("keys", 8, lambda row: _num(row.get("redis_keys", math.nan), 0)),
    ("aof", 6, _mb("redis_aof_bytes")),
    ("cpu", 5, lambda row: _num(service_cpu(row), 2)),
    ("ld cpu", 6, lambda row: _num(row.get("cpu_load", math.nan), 2)),
    ("load1", 5, lambda row: _num(row.get("loadavg_1m", math.nan), 1)),
]


def service_cpu(row: Row) -> float:
    """Cores the service's processes used in the interval (all but the load generator's)."""
    used = [v for k, v in row.items() if k.startswith("cpu_") and k != "cpu_load"]
    return sum(used) if used else math.nan


def header() -> str:
    line = "  ".join(name.rjust(width) for name, width, _ in COLUMNS)
    note = (
        "(ms: latency from the scheduled send; MB: RSS per process, r.used = Redis used_memory; w = warm-up;\n"
        " cpu: cores the service used, ld cpu: the load generator's)"
    )
    return f"{note}\n{line}\n" + "  ".join("-" * width for _, width, _ in COLUMNS)


def line(row: Row) -> str:
    return "  ".join(cell(row).rjust(width) for _, width, cell in COLUMNS)


def _num(value: float, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def checked_series(rows: Sequence[Row]) -> list[str]:
    """The series that must level off: front and shard RSS, Redis used_memory."""
    return ["rss_front", *shard_series(rows), "redis_used_memory"]


def shown_series(rows: Sequence[Row]) -> list[str]:
    """Every series the summary lists: the checked ones first, then the rest that was sampled."""
    others = ["rss_redis", "rss_ray", "rss_load", "rss_supervisor", "redis_used_memory_rss", "redis_keys",
              "redis_aof_bytes", "redis_dir_bytes", "redis_frag_ratio"]  # fmt: skip
    gauges = sorted({k for row in rows for k in row if k.startswith("svc_")})
    present = {k for row in rows for k in row}
    return [k for k in [*checked_series(rows), *others, *gauges] if k in present]


def growth(rows: Sequence[Row], key: str) -> dict[str, float]:
    """Start and end values of `key` after the warm-up, and its growth over the last third of that
    span: the least-squares slope times the third's length, as % of the mean over the third (a fit,
    so that one noisy sample at either end does not decide the verdict)."""
    points = [(row["t_s"], float(row[key])) for row in rows if not row["warmup"] and key in row]
    if not points:
        return {"start": math.nan, "end": math.nan, "growth_pct": math.nan}
    t_first, t_last = points[0][0], points[-1][0]
    third = [(t, v) for t, v in points if t >= t_last - (t_last - t_first) / 3]
    result = {"start": points[0][1], "end": points[-1][1], "growth_pct": math.nan}
    if len(third) >= 2:
        ts, vs = [t for t, _ in third], [v for _, v in third]
        t_mean, v_mean = sum(ts) / len(ts), sum(vs) / len(vs)
        spread = sum((t - t_mean) ** 2 for t in ts)
        slope = sum((t - t_mean) * (v - v_mean) for t, v in third) / spread if spread else 0.0
        result["growth_pct"] = 100 * slope * (ts[-1] - ts[0]) / v_mean if v_mean else math.nan
    return result


def summary(rows: Sequence[Row]) -> dict[str, Any]:
    measured = [row for row in rows if not row["warmup"]]
    p99s = [max(row["recommend_p99_ms"], row["record_p99_ms"]) for row in measured]
    p99s = [p for p in p99s if not math.isnan(p)]
    series = {key: growth(rows, key) for key in shown_series(rows)}
    return {
        "series": series,
        "errors": sum(row["errors"] - row["shed"] for row in rows),
        "shed": sum(row["shed"] for row in rows),
        "errors_by_code": _errors_by_code(rows),
        "max_p99_ms": max(p99s, default=math.nan),
        "intervals_over_p99": sum(p > MAX_P99_MS for p in p99s),
        "measured_intervals": len(measured),
        "requests_ok": sum(row[f"{rpc.lower()}_ok"] for row in rows for rpc in RPCS),
        "checked": checked_series(rows),
    }


def _errors_by_code(rows: Sequence[Row]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("err_"):
                totals[key[4:]] = totals.get(key[4:], 0) + int(value)
    return totals


def verdicts(result: Mapping[str, Any]) -> list[tuple[bool, str]]:
    """(passed, line) per criterion of issue 10."""
    errors, shed = result["errors"], result["shed"]
    by_code = ", ".join(f"{k} {v}" for k, v in result["errors_by_code"].items()) or "none"
    lines = [(errors + shed == 0, f"errors: {errors} failed RPCs + {shed} pairs shed ({by_code}); must be 0")]
    for key in result["checked"]:
        pct = result["series"][key]["growth_pct"]
        ok = not math.isnan(pct) and pct <= MAX_GROWTH_PERCENT
        lines.append((ok, f"{key}: growth over the last third {_num(pct, 2)}% (<= {MAX_GROWTH_PERCENT:g}%)"))
    over, measured, worst = result["intervals_over_p99"], result["measured_intervals"], result["max_p99_ms"]
    lines.append(
        (
            measured > 0 and over == 0,
            f"latency: {over} of {measured} intervals after warm-up with p99 > {MAX_P99_MS:g} ms "
            f"(worst p99 {_num(worst, 1)} ms)",
        )
    )
    return lines


def print_summary(rows: Sequence[Row], result: Mapping[str, Any], more: Sequence[tuple[bool, str]] = ()) -> bool:
    """The summary table and the verdict lines (``verdicts`` and ``more``); True when every criterion holds."""
    print("\nseries after warm-up: start, end, growth over the last third (least-squares fit, % of its mean)")
    width = max(len(k) for k in result["series"]) if result["series"] else 10
    print(f"  {'series':<{width}}  {'start':>14}  {'end':>14}  {'growth %':>9}")
    for key, figures in result["series"].items():
        in_bytes = key.startswith("rss_") or key.split("{")[0].endswith(("memory", "memory_rss", "bytes"))
        scale, unit = (MB, " MB") if in_bytes else (1, "")
        cells = [_num(figures["start"] / scale, 1) + unit, _num(figures["end"] / scale, 1) + unit]
        mark = " *" if key in result["checked"] else ""
        print(f"  {key:<{width}}  {cells[0]:>14}  {cells[1]:>14}  {_num(figures['growth_pct'], 2):>9}{mark}")
    print("  (* = must level off)")
    print(f"\nrequests answered {result['requests_ok']:,}; worst p99 after warm-up {_num(result['max_p99_ms'], 1)} ms")
    passed = True
    print("\nverdict (issue 10)")
    for ok, text in [*verdicts(result), *more]:
        passed = passed and ok
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"  => {'PASS' if passed else 'FAIL'}")
    return passed


def write_files(out: Path, rows: Sequence[Row], document: Mapping[str, Any]) -> None:
    """samples.csv (one row per interval, a column per series) and soak.json (settings, rows, summary)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "soak.json", "w") as handle:
        json.dump(_no_nan({**document, "rows": list(rows)}), handle, indent=2, default=str)


def _no_nan(value: Any) -> Any:
    """NaN (no sample, no latency) as null: strict JSON readers reject NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
