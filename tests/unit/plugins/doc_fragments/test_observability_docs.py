"""Every module documents the observability options and the same `metrics` return value.

ansible-test wants literal doc strings, so each module's RETURN carries its own copy of the `metrics` entry; this
test keeps the copies equal to what RunMetrics.as_dict and KeelModule really return.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import yaml
from ansible_collections.keel.postgres.plugins import modules
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import observability_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

MODULES = sorted(info.name for info in pkgutil.iter_modules(modules.__path__))


def test_there_are_modules():
    assert len(MODULES) >= 14


@pytest.mark.parametrize("name", MODULES)
def test_the_module_documents_metrics_and_the_observability_options(name):
    module = importlib.import_module("ansible_collections.keel.postgres.plugins.modules." + name)
    documentation = yaml.safe_load(module.DOCUMENTATION)
    assert "keel.postgres.observability" in documentation["extends_documentation_fragment"]
    metrics = yaml.safe_load(module.RETURN)["metrics"]
    assert metrics["returned"] == "always" and metrics["type"] == "dict"
    returned = set(RunMetrics().as_dict()) | {"exported"}
    assert set(metrics["contains"]) == returned
    assert set(observability_argument_spec()) == {"metrics_textfile", "otlp_endpoint", "traceparent"}
