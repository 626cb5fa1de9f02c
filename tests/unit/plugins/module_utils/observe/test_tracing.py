"""When tracing is on, and that nothing of OpenTelemetry is imported when it is off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_unless_an_endpoint_is_given_or_set_in_the_environment():
    assert tracing.trace_settings({}, {"TRACEPARENT": PARENT}) is None
    settings = tracing.trace_settings({"otlp_endpoint": "http://127.0.0.1:4318"}, {})
    assert settings is not None and settings.endpoint == "http://127.0.0.1:4318/v1/traces" and settings.timeout_seconds == 5.0
    from_env = tracing.trace_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "TRACEPARENT": PARENT,
                                           "OTEL_EXPORTER_OTLP_TIMEOUT": "120"})
    assert from_env is not None and from_env.endpoint is None and from_env.traceparent == PARENT and from_env.timeout_seconds == 30.0
    assert tracing.trace_settings({"otlp_endpoint": "http://x:4318/v1/traces"}, {}).endpoint == "http://x:4318/v1/traces"


@pytest.mark.parametrize("environ", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_the_standard_switches_turn_it_off(environ):
    assert tracing.trace_settings({"otlp_endpoint": "http://127.0.0.1:4318"}, environ) is None


def test_the_option_wins_over_the_environment_for_the_parent():
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    settings = tracing.trace_settings({"otlp_endpoint": "http://127.0.0.1:4318", "traceparent": other}, {"TRACEPARENT": PARENT})
    assert settings.traceparent == other


def test_a_credential_in_the_endpoint_is_not_shown():
    settings = tracing.trace_settings({"otlp_endpoint": "https://user:s3cret@collector.example:4318"}, {})
    assert "s3cret" not in tracing.shown_endpoint(settings) and "collector.example:4318" in tracing.shown_endpoint(settings)


@pytest.mark.parametrize(("params", "field"), [({"otlp_endpoint": "collector:4318"}, "otlp_endpoint"),
                                               ({"traceparent": "00-xyz-01"}, "traceparent")])
def test_bad_options_name_the_field(params, field):
    with pytest.raises(InvalidOption) as raised:
        tracing.trace_settings(params, {})
    assert raised.value.field == field


def test_a_module_run_without_tracing_imports_nothing_from_opentelemetry():
    code = (
        "import sys\n"
        "from ansible_collections.keel.postgres.plugins.module_utils import keel_module\n"
        "from ansible_collections.keel.postgres.plugins.module_utils.observe import tracing\n"
        "from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics\n"
        "m = RunMetrics()\n"
        "with m.phase('x'):\n"
        "    m.count('rows', 1)\n"
        "assert tracing.trace_settings({}, {}) is None\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert completed.stdout.strip() == "[]"
