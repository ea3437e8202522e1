"""Tracing and metrics set-up shared by the gRPC front and the shard actors.

Tracing is chosen by ``REWARDLOOP_TRACES`` (or an explicit spec):

- ``""`` / ``"off"``: no exporter (OpenTelemetry's no-op tracer; the front then installs no
  tracing interceptor either: it cost ~5% of the front's CPU per RPC);
- ``"console"``: spans to stderr;
- ``"file:PATH"``: one JSON span per line appended to PATH (offline, greppable; the
  tests read it to follow an RPC from the front into the shard);
- ``"otlp"``: OTLP/gRPC to $OTEL_EXPORTER_OTLP_ENDPOINT (needs
  ``opentelemetry-exporter-otlp``, not a default dependency).

Spans carry the user's pseudonym (``rewardloop.user``), never the raw user id.
Metrics live with the front (``rewardloop.server.metrics``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

TRACES_ENV = "REWARDLOOP_TRACES"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one JSON line to a file: an exporter that needs no network."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(span.to_json(indent=None) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


_configured: str | None = None


def configure_tracing(spec: str | None = None, service_name: str = "rewardloop") -> None:
    """Install a tracer provider once per process, as `spec` (or $REWARDLOOP_TRACES) says."""
    global _configured
    spec = os.environ.get(TRACES_ENV, "") if spec is None else spec
    if spec in ("", "off") or _configured is not None:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if spec == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif spec.startswith("file:"):
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(spec.removeprefix("file:"))))
    elif spec == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ValueError(f"{TRACES_ENV} must be off, console, file:PATH or otlp; got {spec!r}")
    trace.set_tracer_provider(provider)
    _configured = spec


def tracing_on() -> bool:
    """Whether this process exports spans (``configure_tracing`` installed a provider)."""
    return _configured is not None


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
