# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every keel.postgres module, and connecting.

Option names match community.postgresql so users can copy their connection
vars between collections unchanged. Options left unset fall through to
libpq's own environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE,
PGDATABASE, PGSSLMODE, PGSERVICE, ...), so secrets can stay out of task
arguments entirely. A password given as an option is handed to libpq in
memory: it never appears on a command line, in a result or in an error.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import ConnectionFailed, InvalidOption

try:
    import psycopg
except ImportError:
    psycopg = None
    PSYCOPG_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    PSYCOPG_IMPORT_ERROR = None

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# connect_params may carry any libpq keyword except those we own as options:
# a password there would be logged with the task arguments.
_RESERVED_CONNECT_PARAMS = {
    "password": "login_password",
    "passfile": "connect_params is logged; point PGPASSFILE at the file instead",
    "sslpassword": "connect_params is logged and reaches client tools' command lines; protect the key with file permissions instead",
    "user": "login_user",
    "host": "login_host or login_unix_socket",
    "hostaddr": "login_host",
    "port": "port",
    "dbname": "db",
    "sslmode": "ssl_mode",
    "sslrootcert": "ca_cert",
    "connect_timeout": "connect_timeout",
}

DEFAULT_LOGIN_USER = "postgres"


def connection_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The argument_spec entries every module that talks to PostgreSQL accepts."""
    return dict(
        login_user=dict(type="str", aliases=["login"]),
        login_password=dict(type="str", no_log=True),
        login_host=dict(type="str", aliases=["host"]),
        login_unix_socket=dict(type="str", aliases=["unix_socket"]),
        port=dict(type="int", aliases=["login_port"]),
        db=dict(type="str", aliases=["login_db", "database"]),
        ssl_mode=dict(type="str", choices=SSL_MODES),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_params=dict(type="dict", default={}),
        connect_timeout=dict(type="int", default=10),
    )


def connection_kwargs(params: Dict[str, Any], application_name: str) -> Dict[str, Any]:
    """Translate module options into libpq keywords, validating them first.

    Unset options are left out so libpq applies its environment variables and
    service files; only the user name gets community.postgresql's default.
    """
    kwargs: Dict[str, Any] = {}
    extra = params.get("connect_params") or {}
    for key in extra:
        owner = _RESERVED_CONNECT_PARAMS.get(str(key).lower())
        if owner is not None:
            raise InvalidOption("connect_params", "key {0!r} is not accepted here; use {1}".format(key, owner))
    kwargs.update(extra)

    host = params.get("login_unix_socket") or params.get("login_host")
    if host:
        kwargs["host"] = host
    if params.get("port") is not None:
        if not 0 < int(params["port"]) < 65536:
            raise InvalidOption("port", "must be between 1 and 65535, got {0}".format(params["port"]))
        kwargs["port"] = int(params["port"])
    kwargs["user"] = params.get("login_user") or os.environ.get("PGUSER") or DEFAULT_LOGIN_USER
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    if params.get("db"):
        kwargs["dbname"] = params["db"]
    if params.get("ssl_mode"):
        kwargs["sslmode"] = params["ssl_mode"]
    if params.get("ca_cert"):
        kwargs["sslrootcert"] = params["ca_cert"]
    timeout = params.get("connect_timeout")
    if timeout is not None:
        if int(timeout) < 0:
            raise InvalidOption("connect_timeout", "must not be negative, got {0}".format(timeout))
        kwargs["connect_timeout"] = int(timeout)
    kwargs.setdefault("application_name", application_name)
    return kwargs


def describe_target(kwargs: Dict[str, Any]) -> str:
    """A password-free description of where we tried to connect, for messages."""
    host = kwargs.get("host") or os.environ.get("PGHOST") or "the default socket"
    port = kwargs.get("port") or os.environ.get("PGPORT") or 5432
    dbname = kwargs.get("dbname") or os.environ.get("PGDATABASE") or kwargs.get("user")
    return "database {0!r} on {1} port {2} as user {3!r}".format(dbname, host, port, kwargs.get("user"))


def connect(params: Dict[str, Any], application_name: str, autocommit: bool = True) -> Any:
    """Open a psycopg connection or raise ConnectionFailed with libpq's reason."""
    if psycopg is None:
        raise ConnectionFailed("psycopg (version 3) is not installed on the host running the module",
                               cause=PSYCOPG_IMPORT_ERROR)
    kwargs = connection_kwargs(params, application_name)
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip(), secrets_in(kwargs))
        raise ConnectionFailed(
            "could not connect to {0}: {1}".format(describe_target(kwargs), reason),
            cause=type(exc).__name__,
        ) from None


def secrets_in(kwargs: Dict[str, Any]) -> List[str]:
    """Values that must never be echoed back, whatever libpq puts in a message."""
    return [str(kwargs[key]) for key in ("password",) if kwargs.get(key)]


def redact(text: str, secrets: List[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "********")
    return text
