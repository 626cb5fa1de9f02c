# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A run's phases as OpenTelemetry spans, sent over OTLP/HTTP when, and only when, the user asked for it.

Tracing is requested by the module option ``otlp_endpoint`` or by the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``
variables of the module's process (``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off). Otherwise this file imports
nothing from OpenTelemetry and sends nothing.

The spans are built after the work, from the timestamps ``RunMetrics``
recorded: one span for the run, one child per phase (repetitions already
aggregated), each with its counters as attributes. Building them afterwards
keeps the SDK out of the hot path entirely and sends one request per run.
The parent is the ``traceparent`` option, else the ``TRACEPARENT`` variable.

Attributes are the run's labels (db, table, migration, tenant, tier...),
counters and the error kind; never SQL text, a row value or an error message
(server messages can quote rows). A collector that is down, slow or refuses
the spans costs at most the export timeout and one warning; the task goes on.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_TIMEOUT_SECONDS = 5.0
TRACES_PATH = "/v1/traces"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
LIBRARIES = "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http"


@dataclass(frozen=True)
class TraceSettings:
    endpoint: Optional[str]  # None: the exporter reads the OTEL_EXPORTER_OTLP_* variables itself
    traceparent: Optional[str]
    tracestate: Optional[str]
    timeout_seconds: float
    service_name: str


@dataclass
class ExportOutcome:
    trace_id: Optional[str] = None
    spans: int = 0
    warning: Optional[str] = None


def trace_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Optional[TraceSettings]:
    """What to send where, or None when tracing was not asked for. Bad options raise ``InvalidOption``."""
    endpoint = params.get("otlp_endpoint")
    traceparent = params.get("traceparent")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidOption("otlp_endpoint", "must be an http:// or https:// URL of an OTLP/HTTP receiver, such as http://127.0.0.1:4318")
        if not parts.path.rstrip("/").endswith(TRACES_PATH):
            endpoint = endpoint.rstrip("/") + TRACES_PATH
    if traceparent and not valid_traceparent(traceparent):
        raise InvalidOption("traceparent", "must be a W3C traceparent such as 00-<32 hex trace id>-<16 hex parent id>-01, with ids not all zero")
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if not endpoint and not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    if not traceparent:
        traceparent = environ.get("TRACEPARENT") or None
    return TraceSettings(
        endpoint=endpoint,
        traceparent=traceparent,
        tracestate=environ.get("TRACESTATE") or None,
        timeout_seconds=_timeout(environ),
        service_name=environ.get("OTEL_SERVICE_NAME") or "keel.postgres",
    )


def valid_traceparent(value: str) -> bool:
    match = _TRACEPARENT.match(value.strip())
    return bool(match) and set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}


def export_run(metrics: RunMetrics, module: str, error_kind: Optional[str], check_mode: bool, settings: TraceSettings) -> ExportOutcome:
    """Send the run's span tree; never raises. A problem is returned as one warning."""
    try:
        from opentelemetry.sdk.trace.export import SpanExportResult
    except ImportError:
        return ExportOutcome(warning="tracing was requested (otlp_endpoint or OTEL_EXPORTER_OTLP_*), but {0} are not installed on the "
                             "host that runs the module; no spans were sent".format(LIBRARIES))
    # The SDK logs export failures itself, sometimes with request details; the one warning below is the report.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    try:
        spans = build_spans(metrics, module, error_kind, check_mode, settings)
    except Exception as exc:  # a bug or an SDK change must not fail the user's task
        return ExportOutcome(warning="tracing: the spans could not be built ({0}); none were sent".format(type(exc).__name__))
    outcome = ExportOutcome(trace_id=format(spans[-1].context.trace_id, "032x"), spans=len(spans))
    exporter = _exporter(settings)
    try:
        result = exporter.export(spans)
    except Exception as exc:
        result, reason = None, type(exc).__name__
    else:
        reason = "it did not accept them"
    finally:
        exporter.shutdown()
    if result != SpanExportResult.SUCCESS:
        outcome.warning = "tracing: {0} spans could not be sent to {1} ({2}); the task went on without them".format(
            len(spans), shown_endpoint(settings), reason)
    return outcome


def build_spans(metrics: RunMetrics, module: str, error_kind: Optional[str], check_mode: bool, settings: TraceSettings) -> List[Any]:
    """The ended spans, children first and the run's span last."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    tracer = provider.get_tracer("keel.postgres")
    parent = None
    if settings.traceparent and valid_traceparent(settings.traceparent):
        carrier = {"traceparent": settings.traceparent.strip()}
        if settings.tracestate:
            carrier["tracestate"] = settings.tracestate
        parent = TraceContextTextMapPropagator().extract(carrier)
    now = time.time_ns()
    root = tracer.start_span("keel.postgres." + module, context=parent, attributes=run_attributes(metrics, module, error_kind, check_mode),
                             start_time=metrics.started_ns)
    opened = []
    for record in metrics.records:
        above = opened[record.parent] if record.parent is not None else root
        attributes = {"keel.phase": record.name, "keel.repetitions": record.repetitions, "keel.busy_ms": round(record.busy_ms, 3)}
        attributes.update({"keel." + key: value for key, value in record.attributes.items()})
        attributes.update({"keel." + key: value for key, value in record.counters.items()})
        opened.append(tracer.start_span(record.name, context=trace.set_span_in_context(above), attributes=attributes,
                                        start_time=record.started_ns))
    for record, span in reversed(list(zip(metrics.records, opened))):
        if record.failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=record.ended_ns or now)
    if error_kind:
        root.set_status(Status(StatusCode.ERROR, error_kind))
    root.end(end_time=max(now, metrics.started_ns))
    return [*reversed(opened), root]


def run_attributes(metrics: RunMetrics, module: str, error_kind: Optional[str], check_mode: bool) -> Dict[str, Any]:
    labels = metrics.labels
    attributes: Dict[str, Any] = {"keel.module": module, "db.system": "postgresql", "keel.check_mode": check_mode,
                                  "keel.outcome": "failure" if error_kind else "success"}
    if "db" in labels:
        attributes["db.namespace"] = labels["db"]
    attributes.update({"keel." + key: value for key, value in labels.items()})
    attributes.update({"keel." + key: value for key, value in metrics.counters.items()})
    if error_kind:
        attributes["keel.error"] = error_kind
    return attributes


def shown_endpoint(settings: TraceSettings) -> str:
    """The endpoint for a message: without user information, which can hold a credential."""
    endpoint = settings.endpoint
    if not endpoint:
        return "the OTEL_EXPORTER_OTLP_* endpoint"
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.hostname + (":{0}".format(parts.port) if parts.port else ""), parts.path, "", ""))


def _exporter(settings: TraceSettings) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.timeout_seconds)


def _timeout(environ: Mapping[str, str]) -> float:
    """The OTLP timeout variables count seconds; keel caps the wait so a dead collector cannot hold a task for long."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        try:
            return min(float(environ[name]), 30.0)
        except (KeyError, ValueError):
            continue
    return DEFAULT_TIMEOUT_SECONDS
