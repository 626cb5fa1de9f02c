# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``KeelModule``: the AnsibleModule every keel.postgres module is built on.

It adds the shared connection options, fails early with ``missing_required_lib``
when psycopg is absent on the host running the module, opens connections
tagged with the module's name, attaches ``metrics`` to every result, and is
the single place where the engine's typed errors become ``fail_json``.

It is also where every run is observed the same way (``observe``): after the
work, succeeded or failed, the run's metrics go to the Prometheus textfile
(``metrics_textfile``) and its phases to an OTLP collector as spans
(``otlp_endpoint`` / ``OTEL_EXPORTER_OTLP_*``, parent ``traceparent`` /
``TRACEPARENT``). Neither can fail the task once the work is done: a problem
becomes one warning.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.keel.postgres.plugins.module_utils import pg
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe import textfile, tracing
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

PSYCOPG_URL = "https://www.psycopg.org/psycopg3/docs/basic/install.html"
# Metrics labels taken from options of the same meaning wherever a module has them (label -> option).
EARLY_LABELS = {"db": "db", "tenant": "tenant"}


class KeelModule(AnsibleModule):
    def __init__(self, name: str, argument_spec: Dict[str, Any], uses_postgres: bool = True, **kwargs: Any) -> None:
        spec: Dict[str, Any] = pg.connection_argument_spec() if uses_postgres else {}
        spec.update(observability_argument_spec())
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        self.keel_name = name
        self.metrics = RunMetrics()
        # Known before any work, so a run that fails early still lands on its tenant's and database's series.
        self.metrics.label(**{label: self.params.get(option) for label, option in EARLY_LABELS.items()
                              if isinstance(self.params.get(option), str)})
        self._trace_settings: Optional[tracing.TraceSettings] = None
        try:
            self._trace_settings = tracing.trace_settings(self.params, os.environ)
            if self.params.get("metrics_textfile"):
                textfile.check_path(self.params["metrics_textfile"])
        except InvalidOption as exc:
            self._fail(exc, observe=False)
        if uses_postgres and pg.PSYCOPG_IMPORT_ERROR is not None:
            self.fail_json(
                msg=missing_required_lib("psycopg (version 3, e.g. pip install 'psycopg[binary]')", url=PSYCOPG_URL),
                exception=pg.PSYCOPG_IMPORT_ERROR,
            )

    def require_libraries(self, import_errors: Dict[str, Optional[str]]) -> None:
        """Fail with ``missing_required_lib`` for the first library (pip name -> import traceback) that is missing."""
        for library, import_error in import_errors.items():
            if import_error is not None:
                self.fail_json(msg=missing_required_lib(library), exception=import_error)

    @property
    def application_name(self) -> str:
        return "keel.postgres/{0}".format(self.keel_name)

    def connect(self, autocommit: bool = True) -> Any:
        with self.metrics.phase("connect"):
            return pg.connect(self.params, self.application_name, autocommit=autocommit)

    def connect_to(self, database: str) -> Any:
        """An autocommit connection to ``database`` with this module's connection options (backups, restores)."""
        with self.metrics.phase("connect"):
            return pg.connect(dict(self.params, db=database), self.application_name, autocommit=True)

    def client_tool_connection(self, database: str, tool: str) -> Dict[str, Any]:
        """libpq keywords for a client tool (pg_dump, pg_restore) reaching ``database`` like this module does."""
        return pg.connection_kwargs(dict(self.params, db=database), "{0} {1}".format(self.application_name, tool))

    def run(self, work: Callable[["KeelModule"], Dict[str, Any]]) -> None:
        """Run the engine call and exit with its result, or fail with its error."""
        try:
            result = work(self)
        except KeelError as exc:
            self._fail(exc, extra=exc.details)
        except Exception as exc:  # a psycopg error the engine did not translate
            if pg.psycopg is not None and isinstance(exc, pg.psycopg.Error):
                self._fail_database_error(exc)
            self._observe(error_kind="unexpected_error")
            raise
        result.setdefault("changed", False)
        result["metrics"] = self._observe(error_kind=None)
        self.exit_json(**result)

    def _observe(self, error_kind: Optional[str]) -> Dict[str, Any]:
        """The result's ``metrics``, after writing the textfile and sending the spans (each only when asked for).

        The record is read once, when the work is over, so the result and the textfile report the same figures.
        """
        metrics = self.metrics.as_dict()
        exported: Dict[str, Any] = {"textfile": None, "trace_id": None, "spans": 0}
        path = self.params.get("metrics_textfile")
        if path and not self.check_mode:
            try:
                written = textfile.write_textfile(path, self.keel_name, metrics, self.metrics.maxima, error_kind is None, time.time())
                exported["textfile"] = written["path"]
                if written["reset"]:
                    self.warn("metrics_textfile: {0} held text keel did not write; it was replaced".format(written["path"]))
            except (OSError, InvalidOption) as exc:
                self.warn("metrics_textfile: {0} could not be written ({1})".format(path, getattr(exc, "message", None) or type(exc).__name__))
        if self._trace_settings is not None:
            outcome = tracing.export_run(self.metrics, self.keel_name, error_kind, self.check_mode, self._trace_settings)
            exported.update(trace_id=outcome.trace_id, spans=outcome.spans)
            if outcome.warning:
                self.warn(outcome.warning)
        metrics["exported"] = exported
        return metrics

    def _fail(self, exc: KeelError, extra: Optional[Dict[str, Any]] = None, observe: bool = True) -> None:
        details: Dict[str, Any] = dict(extra or {})
        details.update(error=exc.kind, metrics=self._observe(error_kind=exc.kind) if observe else self.metrics.as_dict())
        if exc.field:
            details["field"] = exc.field
        if exc.cause:
            details["cause"] = self._redact(exc.cause)
        self.fail_json(msg=self._redact(exc.message), **details)

    def _fail_database_error(self, exc: Exception) -> None:
        sqlstate = getattr(exc, "sqlstate", None)
        self.fail_json(
            msg="PostgreSQL error: {0}".format(self._redact(str(exc).strip())),
            error="query_failed",
            sqlstate=sqlstate,
            metrics=self._observe(error_kind="query_failed"),
        )

    def _redact(self, text: str) -> str:
        password = self.params.get("login_password")
        return pg.redact(text, [password] if password else [])


def observability_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The options every module takes for its metrics and traces (doc fragment keel.postgres.observability)."""
    return dict(
        metrics_textfile=dict(type="path"),
        otlp_endpoint=dict(type="str"),
        traceparent=dict(type="str"),
    )
