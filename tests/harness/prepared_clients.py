"""Persistent psycopg 3 clients that hold server-side prepared statements across a schema change.

An application's connection pool keeps connections for hours, and drivers
prepare their frequent statements once per connection. PostgreSQL fixes a
prepared statement's result type when it is prepared: if a later change makes
the same text return another row shape, every execution fails with SQLSTATE
0A000 "cached plan must not change result type". These clients reproduce that
situation: each one connects with its ``search_path`` set in the connection
options (as an application selects a version schema; never switched later,
since switching re-parses the statement), prepares one statement, and is probed
again after every phase of a migration.

Modes, as drivers run statements:
- ``autocommit``: each execution is its own transaction. psycopg keeps the
  failed prepared statement, so a changed shape fails on every retry.
- ``transaction``: each execution runs inside BEGIN ... COMMIT. On an error the
  transaction is rolled back, and psycopg's rollback deallocates all of the
  connection's prepared statements, so the next probe prepares afresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import psycopg

Mode = Literal["autocommit", "transaction"]
Shape = Literal["star", "explicit"]
MODES: tuple[Mode, ...] = ("autocommit", "transaction")
SHAPES: tuple[Shape, ...] = ("star", "explicit")

STAR = "SELECT * FROM orders WHERE id = %s"
EXPLICIT = "SELECT id, amount, note FROM orders WHERE id = %s"
DEFAULT_STATEMENTS: Mapping[Shape, str] = {"star": STAR, "explicit": EXPLICIT}

# Schema names go into the connection options unquoted; anything else would need quoting rules there.
_PLAIN_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*")
# The application_name convention migration_info reads: "<app> keel:<version schema>".
APPLICATION = "keel-tests"


@dataclass(frozen=True)
class ClientSpec:
    role: str  # who the client stands for: "v_old", "v_new", "base", ...
    search_path: tuple[str, ...]
    mode: Mode
    shape: Shape
    statement: str  # with %s placeholders

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.role, self.mode, self.shape)


@dataclass(frozen=True)
class Probe:
    sqlstate: Optional[str]  # None: the statement ran
    rows: Optional[int]  # rows returned when it ran


def connection_options(search_path: Sequence[str]) -> str:
    """The libpq ``options`` value that sets search_path for the whole session."""
    for schema in search_path:
        if not _PLAIN_SCHEMA.fullmatch(schema):
            raise ValueError("schema {0!r} is not a plain lower-case identifier".format(schema))
    return "-c search_path={0}".format(",".join(search_path))


def server_text(statement: str) -> str:
    """The statement as the server stores it: psycopg sends %s placeholders as $1, $2, ..."""
    numbers = iter(range(1, statement.count("%s") + 1))
    return re.sub(r"%s", lambda _: "${0}".format(next(numbers)), statement)


class PreparedClient:
    """One connection holding one prepared statement; a log of probe outcomes per phase."""

    def __init__(self, spec: ClientSpec, dsn: str, params: Sequence[Any]) -> None:
        self.spec = spec
        self.params = tuple(params)
        self.log: dict[str, list[Probe]] = {}
        # autocommit=True in both modes: "transaction" clients open their own BEGIN per probe.
        self._conn = psycopg.connect(
            dsn, autocommit=True, options=connection_options(spec.search_path),
            application_name="{0} keel:{1}".format(APPLICATION, spec.search_path[0]))

    def prepare(self) -> None:
        """Run the statement once with prepare=True and check the server holds it prepared in this session."""
        self._run()
        self.assert_prepared()

    def assert_prepared(self) -> None:
        rows = self._conn.execute("SELECT name, statement FROM pg_prepared_statements", prepare=False).fetchall()
        wanted = server_text(self.spec.statement)
        assert any(statement == wanted for _name, statement in rows), \
            "{0}: {1!r} is not prepared in its session; pg_prepared_statements has {2!r}".format(
                self.spec.key, wanted, rows)

    def execute(self, statement: str) -> None:
        """Run another statement on this session (not prepared), e.g. DEALLOCATE ALL as a recovering driver would."""
        self._conn.execute(statement, prepare=False)

    def probe(self, phase: str) -> Optional[str]:
        """Run the prepared statement again; the SQLSTATE of its error, None when it ran."""
        try:
            rows: Optional[int] = self._run()
            sqlstate = None
        except psycopg.Error as error:
            # A lost connection has no SQLSTATE; name the error class so it is not read as success.
            sqlstate, rows = error.sqlstate or type(error).__name__, None
        self.log.setdefault(phase, []).append(Probe(sqlstate, rows))
        return sqlstate

    def _run(self) -> int:
        if self.spec.mode == "transaction":
            # Rolled back on error by the context manager, as an application's transaction would be.
            with self._conn.transaction():
                return len(self._conn.execute(self.spec.statement, self.params, prepare=True).fetchall())
        return len(self._conn.execute(self.spec.statement, self.params, prepare=True).fetchall())

    def close(self) -> None:
        self._conn.close()


@dataclass
class ClientFleet:
    """Every role x mode x shape as one client; a context manager that always closes them.

    ``search_paths`` maps role -> search_path; ``statements`` maps role -> shape -> SQL
    (roles not listed use DEFAULT_STATEMENTS). With three roles this is 12 clients.
    """

    dsn: str
    search_paths: Mapping[str, Sequence[str]]
    statements: Mapping[str, Mapping[Shape, str]] = field(default_factory=dict)
    params: Sequence[Any] = (1,)
    clients: list[PreparedClient] = field(default_factory=list, init=False)

    def specs(self) -> list[ClientSpec]:
        return [ClientSpec(role, tuple(path), mode, shape, self.statements.get(role, DEFAULT_STATEMENTS)[shape])
                for role, path in self.search_paths.items() for mode in MODES for shape in SHAPES]

    def __enter__(self) -> ClientFleet:
        try:
            for spec in self.specs():
                self.clients.append(PreparedClient(spec, self.dsn, self.params))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _of(self, roles: Optional[Sequence[str]]) -> Iterator[PreparedClient]:
        return (client for client in self.clients if roles is None or client.spec.role in roles)

    def prepare(self, roles: Optional[Sequence[str]] = None) -> None:
        """Prepare the statements of these roles (all by default): a role's schema must exist by then."""
        for client in self._of(roles):
            client.prepare()

    def probe(self, phase: str, roles: Optional[Sequence[str]] = None) -> dict[tuple[str, str, str], Optional[str]]:
        """Probe every client (of these roles) once; (role, mode, shape) -> SQLSTATE or None."""
        return {client.spec.key: client.probe(phase) for client in self._of(roles)}

    def outcome(self, role: str, mode: Mode, shape: Shape, phase: str) -> Probe:
        """The last probe of that client in that phase."""
        for client in self.clients:
            if client.spec.key == (role, mode, shape):
                return client.log[phase][-1]
        raise KeyError((role, mode, shape))

    def errors(self) -> dict[tuple[str, str, str, str], list[str]]:
        """(role, mode, shape, phase) -> the SQLSTATEs of the failed probes, for every cell that had one."""
        summary: dict[tuple[str, str, str, str], list[str]] = {}
        for client in self.clients:
            for phase, probes in client.log.items():
                failed = [probe.sqlstate for probe in probes if probe.sqlstate is not None]
                if failed:
                    summary[(*client.spec.key, phase)] = failed
        return summary

    def report(self) -> str:
        """One line per client: its outcome in each phase (ok/n rows or SQLSTATE), for assertion messages."""
        lines = []
        for client in self.clients:
            cells = ["{0}={1}".format(phase, ",".join(
                "ok/{0}".format(probe.rows) if probe.sqlstate is None else probe.sqlstate for probe in probes))
                for phase, probes in client.log.items()]
            lines.append("{0:<8} {1:<11} {2:<8} {3}".format(*client.spec.key, " ".join(cells)))
        return "\n".join(lines)
