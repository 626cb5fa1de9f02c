# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``FileStore``: backups in a write-once directory (a local disk, NFS, a mounted volume).

Write-once: an object is written to a hidden ``.<name>.partial-<random>``
file, fsynced, made read-only, and published with ``os.link``, which fails
instead of replacing an existing file; the directory is fsynced after.

Locks: a directory has no server to enforce retention, so the lock facts go
to a read-only sidecar ``.<name>.lock.json``, published (the same way)
before the object, and ``delete`` honours them. Anyone with write access to
the directory can still remove files by hand: for retention that holds
against an administrator, use an S3 bucket with Object Lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import stat
import tempfile
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import IncompleteUpload, Lock, RequestTally, StoredObject
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import check_key, check_lock, refuse_if_locked
from ansible_collections.keel.postgres.plugins.module_utils.durable_files import sync_directory
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, StoreFailed

READ_ONLY = 0o444
DIRECTORY_MODE = 0o700
_ALREADY_EXISTS = "already exists; backups are never overwritten"
_LOCK_SUFFIX = ".lock.json"
_PARTIAL_MARK = ".partial-"
_LOCK_PARTIAL_MARK = ".lock-partial-"
# Leftovers of an interrupted write: ".<name>.partial-<random>" (object) and ".<name>.lock-partial-<random>" (sidecar).
_PARTIAL_FILE = re.compile(r"^\.(?P<name>.+)(?:\.partial-|\.lock-partial-)[A-Za-z0-9_]+$")
_LOCK_FILE = re.compile(r"^\.(?P<name>.+)\.lock\.json$")


class FileStore:
    """Objects as read-only files under ``root``; keys with '/' are subdirectories."""

    kind = "file"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.requests = RequestTally()

    def describe(self) -> Dict[str, Any]:
        return {"type": "file", "path": self.root, "lock_enforcement": "lock records honoured by keel.postgres; not enforced by the filesystem"}

    def check_ready(self, lock: Lock) -> None:
        if not os.path.isdir(self.root):
            raise InvalidOption("store.path", "{0} does not exist or is not a directory".format(self.root))
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise InvalidOption("store.path", "{0} is not writable by this user".format(self.root))

    def default_retention_days(self) -> Optional[int]:
        return None  # a directory has no default lock

    # -- writing -------------------------------------------------------------------

    def open_writer(self, key: str, lock: Lock) -> "FileWriter":
        self._refuse_existing(key)
        return FileWriter(self, key, check_lock(lock))

    def put_bytes(self, key: str, data: bytes, lock: Lock) -> StoredObject:
        writer = self.open_writer(key, lock)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def _refuse_existing(self, key: str) -> None:
        path = self.path_of(key)
        if os.path.lexists(path):
            raise StoreFailed("{0} {1}".format(path, _ALREADY_EXISTS))
        if os.path.lexists(lock_path(path)):
            raise StoreFailed(
                "{0} {1}: its lock record {2} is left from an interrupted write (see incomplete uploads)".format(path, _ALREADY_EXISTS, lock_path(path))
            )

    def make_directory_of(self, key: str) -> str:
        """Create the key's parent directories (0700) one by one, so each gets the mode; return the last."""
        directory = self.root
        for segment in key.split("/")[:-1]:
            directory = os.path.join(directory, segment)
            try:
                os.mkdir(directory, DIRECTORY_MODE)
            except FileExistsError:
                continue
            except OSError as error:
                raise StoreFailed("cannot create {0}: {1}".format(directory, error.strerror)) from None
            fsync_directory(os.path.dirname(directory))
        return directory

    # -- reading -------------------------------------------------------------------

    def head(self, key: str) -> Optional[StoredObject]:
        path = self.path_of(key)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreFailed("cannot stat {0}: {1}".format(path, error.strerror)) from None
        if not stat.S_ISREG(status.st_mode):
            return None  # a directory of other keys, not an object
        return self._stored_object(key, path, status)

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as reader:
            return reader.read(-1)

    def open_reader(self, key: str) -> "FileReader":
        path = self.path_of(key)
        try:
            return FileReader(open(path, "rb"), path)
        except OSError as error:
            raise StoreFailed("cannot open {0}: {1}".format(path, error.strerror)) from None

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for key, path, status in sorted(self._published_files(prefix)):
            yield self._stored_object(key, path, status)

    def _published_files(self, prefix: str) -> Iterator[Any]:
        for key, path, entry in self._files_under(prefix):
            if not entry.name.startswith(".") and key.startswith(prefix):
                yield key, path, entry.stat(follow_symlinks=False)

    def _files_under(self, prefix: str) -> Iterator[Any]:
        """(key, path, DirEntry) of every regular file below the deepest directory ``prefix`` names."""
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if start:
            check_key(start)
        pending = [start]
        while pending:
            relative = pending.pop()
            directory = os.path.join(self.root, relative) if relative else self.root
            for entry in _entries(directory):
                key = "{0}/{1}".format(relative, entry.name) if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(key)
                elif entry.is_file(follow_symlinks=False):
                    yield key, entry.path, entry

    def _stored_object(self, key: str, path: str, status: os.stat_result) -> StoredObject:
        facts = read_lock_record(path)
        return StoredObject(
            key=key,
            size=status.st_size,
            last_modified=datetime.datetime.fromtimestamp(status.st_mtime, datetime.timezone.utc),
            lock_mode=facts.get("mode"),
            retain_until=_parse_time(facts.get("retain_until")),
            legal_hold=bool(facts.get("legal_hold")),
        )

    # -- deleting -------------------------------------------------------------------

    def delete(self, key: str, bypass_governance: bool = False) -> None:
        stored = self.head(key)
        if stored is None:
            return
        path = self.path_of(key)
        refuse_if_locked(stored, path, bypass_governance)
        # The object before its lock record: a crash in between leaves a harmless orphan record, never an unlocked object.
        _remove(path)
        _remove(lock_path(path))
        fsync_directory(os.path.dirname(path))
        self.requests.add("file_objects_deleted")

    # -- incomplete uploads -------------------------------------------------------

    def incomplete_uploads(self, prefix: str) -> List[IncompleteUpload]:
        """Partial files of interrupted writes, and lock records whose object never got published."""
        uploads: List[IncompleteUpload] = []
        for relative, path, entry in sorted(self._files_under(prefix), key=lambda found: found[0]):
            key = _leftover_key(relative, entry.name, path)
            if key is not None and key.startswith(prefix):
                started = datetime.datetime.fromtimestamp(entry.stat(follow_symlinks=False).st_mtime, datetime.timezone.utc)
                uploads.append(IncompleteUpload(key=key, upload_id=relative, started=started))
        return uploads

    def discard_incomplete(self, upload: IncompleteUpload) -> None:
        # upload_id is the leftover's path relative to root: check it is one before removing anything.
        directory, _separator, name = upload.upload_id.rpartition("/")
        if directory:
            check_key(directory)
        path = os.path.join(self.root, upload.upload_id)
        if "/" in name or _leftover_key(upload.upload_id, name, path) is None:
            raise StoreFailed("{0} is not a leftover of an interrupted write".format(path))
        _remove(path)
        fsync_directory(os.path.dirname(path))

    # -- paths -------------------------------------------------------------------------

    def path_of(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))


class FileWriter:
    """Writes to a hidden partial file; ``commit`` publishes it read-only with its lock record."""

    def __init__(self, store: FileStore, key: str, lock: Lock) -> None:
        self.store = store
        self.key = key
        self.lock = lock
        self.path = store.path_of(key)
        directory = store.make_directory_of(key)
        self._partial = _partial_file(directory, os.path.basename(self.path), _PARTIAL_MARK)
        self._state = "open"

    def write(self, data: bytes) -> None:
        self._require_open()
        try:
            self._partial.file.write(data)
        except OSError as error:
            raise StoreFailed("writing {0} failed: {1}".format(self.path, error.strerror)) from None

    def commit(self) -> StoredObject:
        self._require_open()
        try:
            _close_durably(self._partial.file, self._partial.path)
            publish_lock_record(self.path, self.lock)
            try:
                _publish(self._partial.path, self.path)
            except BaseException:
                _remove(lock_path(self.path))  # ours: the object it describes was never published
                raise
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self.store.requests.add("file_objects_written")
        stored = self.store.head(self.key)
        if stored is None:
            raise StoreFailed("{0} vanished right after it was published".format(self.path))
        return stored

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(OSError):  # the file is being discarded anyway
            self._partial.file.close()
        _remove_quietly(self._partial.path)

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreFailed("{0}: the writer is already {1}".format(self.path, self._state))


class FileReader:
    def __init__(self, handle: Any, path: str) -> None:
        self._handle = handle
        self._path = path

    def read(self, size: int = -1) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as error:
            raise StoreFailed("reading {0} failed: {1}".format(self._path, error.strerror)) from None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "FileReader":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _PartialFile:
    def __init__(self, path: str, handle: Any) -> None:
        self.path = path
        self.file = handle


def lock_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, "." + name + _LOCK_SUFFIX)


def publish_lock_record(path: str, lock: Lock) -> None:
    """Write the sidecar once, before the object, so the object never exists without its lock."""
    record = {
        "mode": lock.mode,
        "retain_until": lock.retain_until.astimezone(datetime.timezone.utc).isoformat() if lock.retain_until else None,
        "legal_hold": bool(lock.legal_hold),
    }
    directory, name = os.path.split(path)
    partial = _partial_file(directory, name, _LOCK_PARTIAL_MARK)
    try:
        partial.file.write(json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
        _close_durably(partial.file, partial.path)
        _publish(partial.path, lock_path(path))
    except BaseException:
        partial.file.close()
        _remove_quietly(partial.path)
        raise


def read_lock_record(path: str) -> Dict[str, Any]:
    """The lock facts of the object at ``path``; {} when it has none (a file placed by hand)."""
    try:
        with open(lock_path(path), "rb") as handle:
            record = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        # Unreadable lock facts must not read as "unlocked".
        raise StoreFailed("the lock record of {0} cannot be read: {1}".format(path, error)) from None
    return record if isinstance(record, dict) else {}


def fsync_directory(directory: str) -> None:
    """Make a link, unlink or mkdir in ``directory`` durable."""
    try:
        sync_directory(directory)
    except OSError as error:
        raise StoreFailed("cannot sync {0}: {1}".format(directory, error.strerror)) from None


def _partial_file(directory: str, name: str, mark: str) -> _PartialFile:
    try:
        # mkstemp: O_EXCL and mode 0600, so nobody else reads the bytes before they are published.
        descriptor, path = tempfile.mkstemp(prefix="." + name + mark, dir=directory)
    except OSError as error:
        raise StoreFailed("cannot create a file in {0}: {1}".format(directory, error.strerror)) from None
    return _PartialFile(path, os.fdopen(descriptor, "wb"))


def _close_durably(handle: Any, path: str) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(path, READ_ONLY)
    except OSError as error:
        raise StoreFailed("cannot sync {0}: {1}".format(path, error.strerror)) from None


def _publish(partial: str, final: str) -> None:
    """Give the synced partial file its final name without ever replacing one."""
    try:
        os.link(partial, final)  # fails with EEXIST, unlike rename
    except FileExistsError:
        raise StoreFailed("{0} {1}".format(final, _ALREADY_EXISTS)) from None
    except OSError as error:
        raise StoreFailed("cannot publish {0}: {1}".format(final, error.strerror)) from None
    _remove(partial)
    fsync_directory(os.path.dirname(final))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise StoreFailed("cannot remove {0}: {1}".format(path, error.strerror)) from None


def _remove_quietly(path: str) -> None:
    # Best effort on a path that is being abandoned; incomplete_uploads reports what stays.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _entries(directory: str) -> List[Any]:
    try:
        with os.scandir(directory) as found:
            return list(found)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise StoreFailed("cannot list {0}: {1}".format(directory, error.strerror)) from None


def _leftover_key(relative: str, name: str, path: str) -> Optional[str]:
    """The key an interrupted write was for, when ``name`` is a partial file or an orphan lock record."""
    directory = relative.rpartition("/")[0]
    partial = _PARTIAL_FILE.match(name)
    if partial:
        return _join(directory, partial.group("name"))
    lock = _LOCK_FILE.match(name)
    if lock and not os.path.lexists(os.path.join(os.path.dirname(path), lock.group("name"))):
        return _join(directory, lock.group("name"))
    return None


def _join(directory: str, name: str) -> str:
    return "{0}/{1}".format(directory, name) if directory else name


def _parse_time(text: Any) -> Optional[datetime.datetime]:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(str(text))
    except ValueError:
        raise StoreFailed("lock record has an unreadable retain_until {0!r}".format(text)) from None
