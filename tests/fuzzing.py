"""Hostile requests for every RPC, built from the proto descriptors, and the error contract
they must meet. Used by tests/integration/test_fuzz.py (a CI-sized run) and bench/fuzz.py
(the long run).

Strategies are derived from each request type's descriptor, so a field added to a proto is
fuzzed by construction: strings from plausible values (a configured surface, a real item)
to 100 KB and odd Unicode, every integer type over its whole range, NaN and infinities,
undefined enum numbers, Timestamps outside their valid range, huge repeated fields and maps.
Raw bodies (random bytes, truncated or corrupted valid messages, invalid UTF-8 in a string
field, deeply nested groups) go through the same generic channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from google.protobuf import symbol_database, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import strategies as st

from rewardloop.v1 import admin_pb2, assigner_pb2, feedback_pb2, recommender_pb2

FD = pb_descriptor.FieldDescriptor
DETAILS_KEY = "grpc-status-details-bin"
# Everything a hostile request may get back. UNKNOWN and INTERNAL are never among them.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # only for bodies over the message size limit
}
# The surfaces hostile traffic may train (the test session's and bench/fuzz.py's service):
# one context-free, one with every kind of request feature and real-time features.
SURFACES: dict[str, dict[str, Any]] = {
    "fuzz_items": {
        "algorithm": "thompson",
        "items": [f"item-{i:03d}" for i in range(8)],
        "reward": {"window_seconds": 2},
    },
    "fuzz_ctx": {
        "algorithm": "linucb",
        "items": [f"item-{i:03d}" for i in range(6)],
        "features": {
            "numeric": ["x"],
            "optional": {"price": 0.0},
            "categorical": {"device": ["ios", "android", "web"]},
            "realtime": ["feedback_1h", "since_positive"],
        },
        "cold_start": {"segment_feature": "device"},
    },
}
# Signs of an implementation detail leaking into a message.
LEAKS = ("Traceback", 'File "', '.py", line', "site-packages", "/rewardloop/", "<class ", "object at 0x")
MAX_DETAILS_CHARS = 1100
_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Method:
    """One unary RPC: its path and request type."""

    path: str
    request_type: type[pb_message.Message]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def methods() -> list[Method]:
    """Every unary RPC of the rewardloop services, read from the descriptors."""
    found = []
    database = symbol_database.Default()
    for module in (recommender_pb2, feedback_pb2, assigner_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                request = database.GetSymbol(method.input_type.full_name)
                found.append(Method(f"/{service.full_name}/{method.name}", request))
    return found


def _is_repeated(field: pb_descriptor.FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FD.LABEL_REPEATED


def _is_map(field: pb_descriptor.FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def strings(plausible: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Valid UTF-8 text, from what the service knows to 100 KB."""
    hostile = st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
        st.integers(129, 100_000).map(lambda n: "x" * n),
        st.sampled_from(["", " ", "\x00", "é" * 200, "\U0001f600" * 70, "../../etc/passwd", "%s%n{0}", "'\"\\"]),
    )
    if not plausible:
        return hostile
    return st.one_of(st.sampled_from(list(plausible)), hostile)


def scalars(field: pb_descriptor.FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy:
    if field.name in hints:
        return hints[field.name]
    kind = field.type
    if kind == FD.TYPE_STRING:
        return strings()
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=300)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        edges = st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-300, 1e300, 0.9999999999999999, float("nan"), float("inf")])
        return st.one_of(edges, st.floats(width=64 if kind == FD.TYPE_DOUBLE else 32))
    if kind == FD.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.integers(-(2**31), 2**31 - 1))
    low, high = _INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.integers(max(low, -3), min(high, 1100)))


def values(
    descriptor: pb_descriptor.Descriptor, hints: Mapping[str, st.SearchStrategy[Any]], depth: int = 0
) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of field values for `descriptor` (some fields left out), nested messages as dicts."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        fields[field.name] = _field_values(field, hints, depth)
    return st.fixed_dictionaries({}, optional=fields)


def _field_values(
    field: pb_descriptor.FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    if _is_map(field):
        key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        value = _single(value_field, hints, depth + 1)
        small = st.dictionaries(scalars(key_field, hints), value, max_size=5)
        huge = st.tuples(value, st.integers(200, 3000)).map(lambda t: {f"k{i}": t[0] for i in range(t[1])})
        return st.one_of(small, huge)
    single = _single(field, hints, depth + 1)
    if not _is_repeated(field):
        return single
    if f"{field.name}[]" in hints:
        return hints[f"{field.name}[]"]
    small = st.lists(single, max_size=5)
    # Huge lists repeat one drawn element (drawing thousands would exhaust hypothesis's
    # buffer), a few MB at most: bodies past the 8 MB limit are a transport matter.
    huge = st.tuples(single, st.integers(900, 2500)).map(lambda t: [t[0]] * min(t[1], _fits(t[0])))
    return st.one_of(small, small, huge)


def _fits(element: Any, budget: int = 4_000_000) -> int:
    return max(1, budget // (len(repr(element)) + 1))


def _single(
    field: pb_descriptor.FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        if field.name in hints:
            return hints[field.name]
        if depth > 4:
            return st.just({})
        return values(field.message_type, hints, depth)
    return scalars(field, hints)


def build(message_type: type[pb_message.Message], fields: Mapping[str, Any]) -> pb_message.Message:
    """A message from a dict of values (unknown enum numbers and out-of-range Timestamps allowed)."""
    message = message_type()
    _fill(message, fields)
    return message


def _fill(message: pb_message.Message, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            for key, item in value.items():
                if field.message_type.fields_by_name["value"].type == FD.TYPE_MESSAGE:
                    _fill(target[key], item)
                else:
                    target[key] = item
        elif _is_repeated(field):
            for item in value:
                if field.type == FD.TYPE_MESSAGE:
                    _fill(target.add(), item)
                else:
                    target.append(item)
        elif field.type == FD.TYPE_MESSAGE:
            target.SetInParent()
            _fill(target, value)
        else:
            setattr(message, name, value)


def requests(method: Method, hints: Hints | None = None) -> st.SearchStrategy[pb_message.Message]:
    """Hostile requests of `method`, a third of them drawn from the mostly valid ones."""
    hints = hints or Hints(fields={})
    hostile = values(method.request_type.DESCRIPTOR, hints.fields)
    drawn = hostile if hints.valid is None else st.one_of(hostile, hints.valid, hostile)
    return drawn.map(lambda fields: build(method.request_type, fields))


@dataclass(frozen=True)
class Hints:
    """What the service knows, per method: `fields` are plausible values mixed into the
    hostile ones field by field; `valid` draws whole requests that are mostly valid, so that
    the fuzz also reaches the code behind validation (shards, the reward engine, OPE)."""

    fields: Mapping[str, st.SearchStrategy[Any]]
    valid: st.SearchStrategy[dict[str, Any]] | None = None


def hints(
    surfaces: tuple[str, ...], items: list[str], decision_ids: list[str], experiments: list[str]
) -> dict[str, Hints]:
    now = int(time.time())
    users = [f"fuzz-user-{k}" for k in range(20)]
    near_now = st.fixed_dictionaries(
        {"seconds": st.integers(now - 10 * 86400, now + 600), "nanos": st.integers(0, 999_999_999)}
    )
    numeric = st.one_of(
        st.fixed_dictionaries({"x": st.floats()}, optional={"price": st.floats()}),
        st.dictionaries(strings(["x", "price", "device", "bad name"]), st.floats(), max_size=4),
    )
    categorical = st.dictionaries(strings(["device", "x"]), strings(["ios", "web", "tv"]), max_size=3)
    event_fields = {
        "event_id": st.one_of(st.uuids().map(str), strings()),
        "user_id": strings(users),
        "surface": strings(surfaces),
        "item_id": strings(items),
        "decision_id": strings(decision_ids),
        "occurred_at": st.one_of(near_now, values(timestamp_pb2.Timestamp.DESCRIPTOR, {})),
    }
    valid_event = st.fixed_dictionaries(
        {
            "event_id": st.uuids().map(str),
            "user_id": st.sampled_from(users),
            "item_id": st.sampled_from(items),
            "signal": st.integers(1, max(feedback_pb2.Signal.values())),
            "value": st.sampled_from([0.0, 1.0, 0.5, 3.0, 30.0]),
        },
        optional={
            "surface": st.sampled_from(surfaces),
            "decision_id": st.sampled_from(decision_ids),
            "occurred_at": near_now,
        },
    )
    hostile_event = values(feedback_pb2.FeedbackEvent.DESCRIPTOR, event_fields)
    finite = st.floats(-10, 10)
    valid_context = st.fixed_dictionaries(
        {"numeric": st.fixed_dictionaries({"x": finite}, optional={"price": finite})},
        optional={"categorical": st.fixed_dictionaries({}, optional={"device": st.sampled_from(["ios", "web", "tv"])})},
    )
    algorithms = ["thompson", "linucb", "hybrid_linucb", "lin_ts", "ucb1", "exp3", "epsilon_greedy"]
    params = ["alpha", "c", "epsilon", "v", "gamma"]
    return {
        "Recommend": Hints(
            fields={
                "user_id": strings(users),
                "surface": strings(surfaces),
                "context": st.fixed_dictionaries({}, optional={"numeric": numeric, "categorical": categorical}),
                "candidates[]": st.one_of(st.lists(strings(items), max_size=6), st.lists(strings(), max_size=3)),
            },
            valid=st.fixed_dictionaries(
                {"user_id": st.sampled_from(users), "surface": st.sampled_from(surfaces)},
                optional={
                    "n": st.integers(0, 3),
                    "context": valid_context,
                    "candidates": st.lists(st.sampled_from(items), min_size=3, max_size=5, unique=True),
                },
            ),
        ),
        "Record": Hints(fields=event_fields, valid=valid_event),
        "RecordBatch": Hints(
            fields=event_fields,
            valid=st.fixed_dictionaries(
                {"events": st.lists(st.one_of(valid_event, valid_event, hostile_event), min_size=1, max_size=6)}
            ),
        ),
        "Assign": Hints(
            fields={"user_id": strings(users), "experiments[]": st.lists(strings(experiments), max_size=4)},
            valid=st.fixed_dictionaries(
                {"user_id": st.sampled_from(users)},
                optional={
                    "experiments": st.lists(st.sampled_from(experiments), max_size=2) if experiments else st.just([])
                },
            ),
        ),
        "EvaluatePolicy": Hints(
            fields={
                "surface": strings(surfaces),
                "algorithm": strings(algorithms),
                "params": st.dictionaries(strings(params), st.floats(), max_size=3),
            },
            valid=st.fixed_dictionaries(
                {"surface": st.sampled_from(surfaces)},
                optional={
                    "algorithm": st.sampled_from(algorithms),
                    "params": st.dictionaries(st.sampled_from(params), st.floats(0, 2), max_size=2),
                    "confidence": st.floats(0, 1),
                    "train_fraction": st.floats(0, 1),
                    "max_decisions": st.integers(0, 2000),
                },
            ),
        ),
    }


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_bodies(valid: st.SearchStrategy[pb_message.Message]) -> st.SearchStrategy[bytes]:
    """Bodies that may not parse: random bytes, valid ones truncated or corrupted, invalid
    UTF-8 in field 1 (a string in every request type), groups nested thousands deep."""

    def truncate(pair: tuple[bytes, int]) -> bytes:
        body, cut = pair
        return body[: cut % (len(body) + 1)]

    def corrupt(triple: tuple[bytes, int, int]) -> bytes:
        body, at, byte = triple
        if not body:
            return bytes([byte])
        at %= len(body)
        return body[:at] + bytes([byte]) + body[at + 1 :]

    serialized = valid.map(lambda m: m.SerializeToString())
    bad_utf8 = (
        st.binary(min_size=1, max_size=20).map(lambda b: b"\xff\xfe" + b).map(lambda b: b"\x0a" + _varint(len(b)) + b)
    )
    nested_groups = st.integers(100, 20_000).map(lambda depth: b"\xfb\x07" * depth)  # field 127, start group
    return st.one_of(
        st.binary(max_size=200),
        st.tuples(serialized, st.integers(0, 10_000)).map(truncate),
        st.tuples(serialized, st.integers(0, 10_000), st.integers(0, 255)).map(corrupt),
        bad_utf8,
        nested_groups,
    )


def violations(trailing_metadata: Sequence[tuple[str, Any]] | None) -> list[tuple[str, str]]:
    for key, value in trailing_metadata or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            found = []
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    found.extend((v.field, v.description) for v in bad.field_violations)
            return found
    return []


def contract_problems(
    code: grpc.StatusCode, details: str, trailing_metadata: Sequence[tuple[str, Any]] | None, body_bytes: int
) -> list[str]:
    """What is wrong with one answer to a hostile request; empty when it keeps the contract."""
    problems = []
    if code not in ALLOWED:
        problems.append(f"status {code.name}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and body_bytes <= 8 * 1024 * 1024:
        problems.append(f"RESOURCE_EXHAUSTED for a {body_bytes}-byte body")
    details = details or ""
    if len(details) > MAX_DETAILS_CHARS:
        problems.append(f"a {len(details)}-character message")
    leaked = [marker for marker in LEAKS if marker in details]
    if leaked:
        problems.append(f"message shows {leaked}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        found = violations(trailing_metadata)
        if not found:
            problems.append("INVALID_ARGUMENT without BadRequest field violations")
        elif not details.startswith(found[0][0]):
            problems.append(f"message does not start with the violation's field {found[0][0]!r}")
    return problems


def call_raw(channel: grpc.Channel, path: str) -> Callable[..., Any]:
    """A generic unary call sending and receiving bytes: no client-side parsing or checks."""
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def health_check() -> Method:
    from grpc_health.v1 import health_pb2

    return Method("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest)


@dataclass
class Report:
    """What a fuzz run sent and got back: calls and codes per method, and contract breaches."""

    codes: dict[str, dict[str, int]]
    problems: list[str]

    @property
    def calls(self) -> int:
        return sum(sum(by_code.values()) for by_code in self.codes.values())

    def count(self, method: str, code: grpc.StatusCode) -> None:
        by_code = self.codes.setdefault(method, {})
        by_code[code.name] = by_code.get(code.name, 0) + 1


def summary(body: bytes, message: pb_message.Message | None = None, limit: int = 300) -> str:
    text = repr(body[:limit]) if message is None else str(message)[:limit].replace("\n", " ")
    return f"{text} ({len(body)} bytes)"


def send(call: Callable[..., Any], body: bytes, timeout: float) -> tuple[grpc.StatusCode, str, Any]:
    try:
        call(body, timeout=timeout)
    except grpc.RpcError as err:
        return err.code(), err.details() or "", err.trailing_metadata()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, "", ()


def fuzz(
    target: str,
    hints: Mapping[str, Hints],
    examples: Mapping[str, int],
    raw_examples: int,
    seed: int = 0,
    timeout: float = 60.0,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Send `examples[method name]` generated requests and `raw_examples` raw bodies to every
    method (health included) at `target`, recording codes and every breach of the contract.

    Blocking (a sync channel). Next to a service in the same process, use `fuzz_in_process`.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    report = Report(codes={}, problems=[])
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        for method in [*methods(), health_check()]:
            strategy = requests(method, hints.get(method.name))
            check = _checker(call_raw(channel, method.path), method, timeout, report)
            common = settings(
                max_examples=examples.get(method.name, 0) or 1,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            if examples.get(method.name, 0):
                hypothesis_seed(seed)(common(given(message=strategy)(_send_message(check))))()
            if raw_examples:
                raw_settings = settings(common, max_examples=raw_examples)
                hypothesis_seed(seed)(raw_settings(given(body=raw_bodies(strategy))(_send_body(check))))()
            progress(f"{method.name}: {report.codes.get(method.name, {})}")
    return report


Check = Callable[[bytes, "pb_message.Message | None"], None]


def _checker(call: Callable[..., Any], method: Method, timeout: float, report: Report) -> Check:
    def check(body: bytes, message: pb_message.Message | None) -> None:
        code, details, trailers = send(call, body, timeout)
        report.count(method.name, code)
        for problem in contract_problems(code, details, trailers, len(body)):
            report.problems.append(f"{method.name}: {problem}: {details[:200]!r} for {summary(body, message)}")

    return check


def _send_message(check: Check) -> Callable[[pb_message.Message], None]:
    def structured(message: pb_message.Message) -> None:
        check(message.SerializeToString(), message)

    return structured


def _send_body(check: Check) -> Callable[[bytes], None]:
    def raw(body: bytes) -> None:
        check(body, None)

    return raw


@dataclass(frozen=True)
class Plan:
    """A fuzz run's arguments, as JSON for `python -m tests.fuzzing` (see `fuzz_in_process`)."""

    target: str
    surfaces: list[str]
    items: list[str]
    decision_ids: list[str]
    experiments: list[str]
    examples: dict[str, int]
    raw_examples: int
    seed: int = 0


async def fuzz_in_process(plan: Plan) -> Report:
    """`fuzz` in a child Python process, for a service running in this one.

    Hypothesis parses strategies' lambdas with `ast`, and CPython 3.11's `ast` is not safe
    across threads: run in a thread beside the service's own threads it failed once with
    "SystemError: AST constructor recursion depth mismatch". A process shares nothing.
    """
    import asyncio
    import json
    import os
    import sys
    from dataclasses import asdict
    from pathlib import Path

    # The child runs test machinery only: coverage's subprocess patch would trace hypothesis
    # (several times slower) and measure nothing of ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fuzzing",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1], env=env,
    )  # fmt: skip
    out, _ = await child.communicate(json.dumps(asdict(plan)).encode())
    if child.returncode != 0:
        raise RuntimeError(f"the fuzz process exited with {child.returncode} (its stderr is above)")
    result = json.loads(out)
    return Report(codes=result["codes"], problems=result["problems"])


def _main() -> None:
    import json
    import sys

    plan = Plan(**json.load(sys.stdin))
    report = fuzz(
        plan.target,
        hints(tuple(plan.surfaces), plan.items, plan.decision_ids, plan.experiments),
        plan.examples,
        plan.raw_examples,
        plan.seed,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    json.dump({"codes": report.codes, "problems": report.problems}, sys.stdout)


if __name__ == "__main__":
    _main()
