# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options every module takes for its metrics and traces (module_utils/observe, docs/observability.md).
    DOCUMENTATION = r"""
options:
  metrics_textfile:
    description:
      - Write the run's metrics to this file in the Prometheus text exposition format, for node_exporter's textfile
        collector (C(--collector.textfile.directory)). The name must end in C(.prom) and its directory must exist.
      - Several runs can share one file (every tenant's backup on a host, say); each run replaces its own series,
        identified by the C(module) label and the run's labels (C(db), C(schema), C(table), C(migration), C(tenant),
        C(tier), C(store)), and keeps the others. The file is replaced atomically under a lock on C(<path>.lock).
      - Written after a failed run too; C(keel_last_success_timestamp_seconds) then keeps its previous value, so alerts
        on stale backups keep firing while runs fail. Not written in check mode.
      - Names carry their unit (C(_seconds), C(_bytes), C(_total)) and the C(keel_) prefix; see docs/observability.md.
      - A file that cannot be written gives a warning, not a failure, once the work is done.
    type: path
  otlp_endpoint:
    description:
      - Send the run's spans (one for the run, one child per phase) to this OTLP/HTTP receiver, for example
        V(http://127.0.0.1:4318); C(/v1/traces) is added unless the URL already ends with it.
      - When unset, spans are sent only if E(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or E(OTEL_EXPORTER_OTLP_ENDPOINT) is
        set in the module's environment (the task's C(environment) keyword); E(OTEL_EXPORTER_OTLP_HEADERS),
        E(OTEL_EXPORTER_OTLP_TIMEOUT) (seconds, at most 30, default 5) and E(OTEL_SERVICE_NAME) are honoured.
        E(OTEL_SDK_DISABLED=true) or E(OTEL_TRACES_EXPORTER=none) turn tracing off.
      - Needs the Python packages C(opentelemetry-sdk) and C(opentelemetry-exporter-otlp-proto-http) on the host that
        runs the module; without them, or with a collector that is down, the task warns once and goes on.
      - Spans carry labels, counters and error kinds, never SQL text, row values, error messages or secrets.
    type: str
  traceparent:
    description:
      - The W3C C(traceparent) of the span the run's span should be a child of, such as
        V(00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01).
      - When unset, E(TRACEPARENT) of the module's environment is used (E(TRACESTATE) with it), else the run starts a
        new trace. See docs/observability.md for joining the trace of community.general's C(opentelemetry) callback.
    type: str
"""
