# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``KeelModule``: the AnsibleModule every keel.postgres module is built on.

It adds the shared connection options, fails early with ``missing_required_lib``
when psycopg is absent on the host running the module, opens connections
tagged with the module's name, attaches ``metrics`` to every result, and is
the single place where the engine's typed errors become ``fail_json``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.keel.postgres.plugins.module_utils import pg
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

PSYCOPG_URL = "https://www.psycopg.org/psycopg3/docs/basic/install.html"


class KeelModule(AnsibleModule):
    def __init__(self, name: str, argument_spec: Dict[str, Any], uses_postgres: bool = True, **kwargs: Any) -> None:
        spec: Dict[str, Any] = pg.connection_argument_spec() if uses_postgres else {}
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        self.keel_name = name
        self.metrics = RunMetrics()
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
            raise
        result.setdefault("changed", False)
        result["metrics"] = self.metrics.as_dict()
        self.exit_json(**result)

    def _fail(self, exc: KeelError, extra: Optional[Dict[str, Any]] = None) -> None:
        details: Dict[str, Any] = dict(extra or {})
        details.update(error=exc.kind, metrics=self.metrics.as_dict())
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
            metrics=self.metrics.as_dict(),
        )

    def _redact(self, text: str) -> str:
        password = self.params.get("login_password")
        return pg.redact(text, [password] if password else [])
