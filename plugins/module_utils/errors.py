# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors raised by the keel.postgres engine.

The engine never calls ``fail_json`` itself: it raises one of these, and
``keel_module.KeelModule`` turns it into a module failure in one place, so
every module reports the same shape (``msg``, ``error``, ``field``, ``cause``).
"""

from __future__ import annotations

from typing import Optional


class KeelError(Exception):
    """Base class: a failure the user can act on, with a readable message."""

    kind = "keel_error"

    def __init__(self, message: str, *, field: Optional[str] = None, cause: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.cause = cause
        # Structured facts returned beside ``msg`` (a gate's report, the sessions blocking a lock).
        self.details: dict = {}


class InvalidOption(KeelError):
    """An option value is wrong; raised before anything is read or changed."""

    kind = "invalid_option"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__("{0}: {1}".format(field, problem), field=field)


class ConnectionFailed(KeelError):
    """The server could not be reached or refused the session."""

    kind = "connection_failed"


class QueryFailed(KeelError):
    """A statement failed on the server."""

    kind = "query_failed"


class ClientToolProblem(KeelError):
    """pg_dump / pg_restore on the module host are missing or unusable."""

    kind = "client_tool"


class GateFailed(KeelError):
    """A readiness gate did not pass; the report is attached for the result."""

    kind = "gate_failed"

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.details = report


class IntegrityFailed(KeelError):
    """A backup's bytes, header or manifest fail authentication: never restored from."""

    kind = "integrity_failed"


class KeyShredded(KeelError):
    """The tenant's key was destroyed on purpose: its backups are unreadable by design."""

    kind = "key_shredded"


class KeyUnavailable(KeelError):
    """The tenant's key is missing, or the key provider refused or could not be reached."""

    kind = "key_unavailable"


class StoreFailed(KeelError):
    """The object store refused or failed an operation (network, permissions, missing bucket)."""

    kind = "store_failed"


class ObjectLocked(StoreFailed):
    """The store refused to delete or overwrite an object because of its lock or legal hold."""

    kind = "object_locked"
