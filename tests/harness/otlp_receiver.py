"""A loopback OTLP/HTTP trace receiver for tests: decodes the real protobuf payloads the exporter sends.

It stands in for an OpenTelemetry collector (none installs from the package registries this project uses): it
accepts ``POST /v1/traces`` with ``application/x-protobuf`` bodies, decodes them with opentelemetry-proto's own
message classes, and keeps both the raw bytes (to search for secrets) and the decoded spans.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: Dict[str, Any]
    status_code: int
    resource: Dict[str, Any]


@dataclass
class OtlpReceiver:
    status: int = 200
    requests: List[bytes] = field(default_factory=list)
    spans: List[ReceivedSpan] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)
    _server: Optional[ThreadingHTTPServer] = None
    _thread: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return "http://127.0.0.1:{0}".format(self._server.server_address[1])

    def start(self) -> "OtlpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                receiver.requests.append(body)
                if receiver.status == 200:
                    receiver.spans.extend(decode(body))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def named(self, name: str) -> List[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]


def decode(body: bytes) -> List[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {item.key: any_value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes={item.key: any_value(item.value) for item in span.attributes},
                    status_code=span.status.code,
                    resource=resource,
                ))
    return spans


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
