# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every backup store (S3 with Object Lock, a write-once directory) offers the engine.

Objects are written once: a writer streams bytes of unknown length and either
commits (the object appears whole, with its lock) or aborts (nothing appears).
Keys are '/'-separated paths relative to the store's prefix; the layout of a
tenant's objects is owned by ``backup.layout``, not by the stores.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

try:
    from typing import Protocol
except ImportError:  # Python < 3.8 on an old managed node
    Protocol = object  # type: ignore[assignment,misc]

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


@dataclass(frozen=True)
class Lock:
    """How an object is protected when written. ``mode`` None: no store lock (write-once still holds)."""

    mode: Optional[str] = None  # "COMPLIANCE" | "GOVERNANCE" | None
    retain_until: Optional[datetime.datetime] = None  # timezone-aware UTC
    legal_hold: bool = False


@dataclass
class StoredObject:
    key: str  # relative to the store prefix
    size: int
    last_modified: Optional[datetime.datetime] = None
    version_id: Optional[str] = None
    lock_mode: Optional[str] = None
    retain_until: Optional[datetime.datetime] = None
    legal_hold: bool = False
    storage_class: Optional[str] = None

    def lock_lapsed(self, now: datetime.datetime) -> bool:
        return not self.legal_hold and (self.retain_until is None or self.retain_until <= now)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "version_id": self.version_id,
            "lock_mode": self.lock_mode,
            "retain_until": self.retain_until.isoformat() if self.retain_until else None,
            "legal_hold": self.legal_hold,
            "storage_class": self.storage_class,
        }


@dataclass
class IncompleteUpload:
    """A multipart upload (or a leftover temp file) that never committed."""

    key: str
    upload_id: str
    started: Optional[datetime.datetime]


class RequestTally:
    """Requests (S3) or files (file store) a store made, by metric name, e.g. ``s3_put_requests``.

    Counted where the request is issued, so the figure is what a provider bills.
    The S3 writer sends parts on its own thread, hence the lock; the engine
    copies the tally into the run's metrics once, at the end
    (``record_store_requests``), because the metrics' phase stack belongs to
    the main thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)


def record_store_requests(store: Any, metrics: Any) -> None:
    """Add the store's request tally to ``metrics`` counters (once per run; a store without a tally adds nothing)."""
    tally = getattr(store, "requests", None)
    if tally is None:
        return
    for name, amount in sorted(tally.counts().items()):
        metrics.count(name, amount)


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> StoredObject:
        """Publish the object whole; after this it cannot be overwritten."""

    def abort(self) -> None:
        """Discard everything written; idempotent, safe after a failed write."""


class ObjectReader(Protocol):
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b'' at the end."""

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """Implemented by ``stores.s3_store.S3Store`` and ``stores.file_store.FileStore``.

    Errors: ``StoreFailed`` for any failure of the store, ``ObjectLocked`` when a
    delete or overwrite is refused because of a lock or legal hold,
    ``InvalidOption(field)`` from ``check_ready`` for a store that cannot honour
    what is asked (missing bucket, Object Lock not enabled for a lock mode).
    """

    kind: str  # "s3" | "file"
    requests: RequestTally  # what this store asked of its backend, for metrics and request cost

    def describe(self) -> Dict[str, Any]:
        """Where objects go, without secrets (for results and the audit log)."""

    def check_ready(self, lock: Lock) -> None: ...

    def default_retention_days(self) -> Optional[int]:
        """The store's default lock (bucket default retention), if any, in days."""

    def open_writer(self, key: str, lock: Lock) -> ObjectWriter: ...

    def put_bytes(self, key: str, data: bytes, lock: Lock) -> StoredObject:
        """Write a small object once; ``StoreFailed`` if the key already exists."""

    def get_bytes(self, key: str) -> bytes: ...

    def open_reader(self, key: str) -> ObjectReader: ...

    def head(self, key: str) -> Optional[StoredObject]:
        """The current version with its lock, or None when absent."""

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Current versions under ``prefix`` (relative), sorted by key, with lock facts."""

    def delete(self, key: str, bypass_governance: bool = False) -> None:
        """Remove every version of ``key``; ``ObjectLocked`` if any version is locked or held."""

    def incomplete_uploads(self, prefix: str) -> List[IncompleteUpload]: ...

    def discard_incomplete(self, upload: IncompleteUpload) -> None: ...
