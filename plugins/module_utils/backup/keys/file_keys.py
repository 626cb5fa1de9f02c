# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tenant keys kept as local files on the host running the module.

Layout under the configured directory (which the operator creates, mode 0700)::

    <tenant>/            0700
    <tenant>/v1.key      0600, 32 raw bytes: version 1 of the tenant's KEK
    <tenant>/v2.key      added by a rotation; the highest version is current
    <tenant>/SHREDDED    tombstone written by shred(): JSON {shredded_at, versions}

Key files are written once and never replaced (temp file, fsync, link()), so
a crash or a concurrent run never leaves a half-written or swapped key.
A key directory or file that group or other may access is refused: a key
anyone else can read is not a secret any more, whatever we do next.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import secrets
import stat
import traceback
from typing import Dict, List, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import (
    DATA_KEY_BYTES,
    KeyVersion,
    TenantKeyState,
    WrappedKey,
    key_shredded,
    unwrap_failed,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.durable_files import sync_directory
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption, KeyUnavailable

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    AESGCM = None
    InvalidTag = Exception
    CRYPTOGRAPHY_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

PROVIDER_NAME = "file"
TOMBSTONE = "SHREDDED"
NONCE_BYTES = 12
TAG_BYTES = 16
# Group and other must have no access at all to key directories and files.
_PRIVATE_MASK = 0o077
_VERSION_FILE = re.compile(r"^v([1-9][0-9]{0,8})\.key$")
_KEY_ID = re.compile(r"^v([1-9][0-9]{0,8})$")
# AAD and tombstone fields the caller's context may repeat but not contradict.
_RESERVED_CONTEXT = ("tenant", "key_id")
# Two runs rotating at once each try the next free number; this bounds the retries.
_ROTATE_ATTEMPTS = 5


def _utc_iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_new_file(path: str, data: bytes) -> None:
    """Create ``path`` holding ``data`` (mode 0600) atomically; FileExistsError if it already exists.

    The bytes go to a private temp file first, are fsynced, then link()ed to the
    final name: link never replaces an existing file (rename would), so a key
    written by another run is never overwritten, and nobody sees a partial file.
    """
    directory = os.path.dirname(path)
    temp = os.path.join(directory, ".{0}.{1}.tmp".format(os.path.basename(path), secrets.token_hex(8)))
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    sync_directory(directory)


def canonical_aad(tenant: str, key_id: str, context: Mapping[str, str]) -> bytes:
    """The AES-GCM associated data: what the wrapped key is bound to, in one byte-exact form."""
    return json.dumps(dict({"tenant": tenant, "key_id": key_id}, **_checked_context(tenant, key_id, context)),
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _checked_context(tenant: str, key_id: str, context: Mapping[str, str]) -> Dict[str, str]:
    # The engine's context repeats the tenant; a different one would silently rebind the key, so it is a bug.
    expected = {"tenant": tenant, "key_id": key_id}
    for name in _RESERVED_CONTEXT:
        if name in context and context[name] != expected[name]:
            raise ValueError("context {0!r} is {1!r}, not {2!r}".format(name, context[name], expected[name]))
    return dict(context)


def _version_number(key_id: str) -> Optional[int]:
    match = _KEY_ID.match(key_id)
    return int(match.group(1)) if match else None


class FileKeyProvider:
    """KeyProvider over ``<directory>/<tenant>/v<N>.key`` files (AES-256-GCM key wrapping)."""

    name = PROVIDER_NAME

    def __init__(self, directory: str, field: str = "key_provider.directory") -> None:
        if AESGCM is None:
            raise KeyUnavailable("the file key provider needs the Python 'cryptography' library on the host running the module",
                                 cause=CRYPTOGRAPHY_IMPORT_ERROR)
        if not directory or not os.path.isabs(directory):
            raise InvalidOption(field, "must be an absolute path, got {0!r}".format(directory))
        if not os.path.isdir(directory):
            # Not created for the user: a typo must not scatter keys in a new, unbacked-up place.
            raise InvalidOption(field, "{0} does not exist or is not a directory; create it (mode 0700) first".format(directory))
        self.directory = directory

    # -- what is on disk ------------------------------------------------------

    def _tenant_dir(self, tenant: str) -> str:
        return os.path.join(self.directory, check_tenant_name(tenant))

    def _version_path(self, tenant: str, number: int) -> str:
        return os.path.join(self._tenant_dir(tenant), "v{0}.key".format(number))

    def _tombstone_path(self, tenant: str) -> str:
        return os.path.join(self._tenant_dir(tenant), TOMBSTONE)

    @staticmethod
    def _refuse_if_shared(path: str, mode: int) -> None:
        if mode & _PRIVATE_MASK:
            raise KeyUnavailable(
                "{0} has mode {1:04o}: group and other must have no access to tenant keys; chmod {2} it "
                "(and consider the keys in it exposed)".format(path, stat.S_IMODE(mode), "700" if stat.S_ISDIR(mode) else "600")
            )

    def _check_directory(self, path: str) -> bool:
        """True when ``path`` is a private directory, False when absent; refuses anything else."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            raise KeyUnavailable("{0} is not a directory".format(path))
        self._refuse_if_shared(path, info.st_mode)
        return True

    def _version_numbers(self, tenant: str) -> List[int]:
        numbers = []
        for entry in os.listdir(self._tenant_dir(tenant)):
            match = _VERSION_FILE.match(entry)
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _read_tombstone(self, tenant: str) -> Optional[Dict[str, object]]:
        try:
            with open(self._tombstone_path(tenant), "rb") as stream:
                raw = stream.read()
        except FileNotFoundError:
            return None
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            # Still a tombstone: an unreadable one must not let the tenant get a fresh key.
            return {"shredded_at": None, "versions": []}
        return document if isinstance(document, dict) else {"shredded_at": None, "versions": []}

    def _read_key(self, tenant: str, number: int) -> bytes:
        path = self._version_path(tenant, number)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyUnavailable("tenant {0} has no key v{1} ({2} does not exist)".format(tenant, number, path)) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyUnavailable("{0} is a symbolic link; key files must be regular files".format(path)) from None
            raise KeyUnavailable("cannot open {0}: {1}".format(path, exc.strerror)) from None
        with os.fdopen(descriptor, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyUnavailable("{0} is not a regular file".format(path))
            self._refuse_if_shared(path, info.st_mode)
            material = stream.read(DATA_KEY_BYTES + 1)
        if len(material) != DATA_KEY_BYTES:
            raise KeyUnavailable("{0} holds {1} bytes, not a {2}-byte key: it is damaged".format(path, len(material), DATA_KEY_BYTES))
        return material

    # -- KeyProvider ----------------------------------------------------------

    def describe(self, tenant: str) -> TenantKeyState:
        self._check_directory(self.directory)
        tenant_dir = self._tenant_dir(tenant)
        if not self._check_directory(tenant_dir):
            return TenantKeyState(tenant=tenant, provider=self.name, exists=False)
        numbers = self._version_numbers(tenant)
        tombstone = self._read_tombstone(tenant)
        if tombstone is not None:
            # Versions still listed here survived an interrupted shred; shredding again destroys them.
            leftovers = [KeyVersion(key_id="v{0}".format(n), created_at=self._created_at(tenant, n)) for n in numbers]
            shredded_at = tombstone.get("shredded_at")
            return TenantKeyState(tenant=tenant, provider=self.name, exists=False, shredded=True,
                                  shredded_at=str(shredded_at) if shredded_at else None, versions=leftovers)
        versions = [KeyVersion(key_id="v{0}".format(n), created_at=self._created_at(tenant, n), current=n == numbers[-1])
                    for n in numbers]
        return TenantKeyState(tenant=tenant, provider=self.name, exists=bool(versions), versions=versions)

    def _created_at(self, tenant: str, number: int) -> Optional[str]:
        """The version file's creation time; an exposed or odd key file is refused here already, not only when used."""
        path = self._version_path(tenant, number)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            raise KeyUnavailable("{0} is not a regular file (a symbolic link?); key files must be regular files".format(path))
        self._refuse_if_shared(path, info.st_mode)
        # Key files are never modified after creation, so their mtime is their creation time.
        return _utc_iso(info.st_mtime)

    def check_material(self, tenant: str, material: bytes) -> None:
        """Refuse ``material`` that differs from an existing v1: an existing key is never replaced."""
        self._check_material_length(material)
        state = self.describe(tenant)
        if state.exists and not secrets.compare_digest(self._read_key(tenant, 1), material):
            raise InvalidOption("key_material", "does not match tenant {0}'s existing key v1; an existing key is never replaced".format(tenant))

    @staticmethod
    def _check_material_length(material: bytes) -> None:
        if len(material) != DATA_KEY_BYTES:
            raise InvalidOption("key_material", "must be {0} bytes, got {1}".format(DATA_KEY_BYTES, len(material)))

    def create(self, tenant: str, material: Optional[bytes] = None) -> TenantKeyState:
        if material is not None:
            self.check_material(tenant, material)
        state = self.describe(tenant)
        if state.shredded:
            # A shredded tenant never silently gets a new key: its old backups would look recoverable.
            raise key_shredded(tenant, state.shredded_at)
        if state.exists:
            return state
        tenant_dir = self._tenant_dir(tenant)
        try:
            os.mkdir(tenant_dir, 0o700)
            sync_directory(self.directory)
        except FileExistsError:
            pass
        # FileExistsError: another run created it meanwhile; same outcome, and its key must stand.
        with contextlib.suppress(FileExistsError):
            write_new_file(self._version_path(tenant, 1), material if material is not None else secrets.token_bytes(DATA_KEY_BYTES))
        return self.describe(tenant)

    def rotate(self, tenant: str) -> TenantKeyState:
        for _attempt in range(_ROTATE_ATTEMPTS):
            state = self._usable_state(tenant)
            number = _version_number(state.versions[-1].key_id) or 0
            try:
                write_new_file(self._version_path(tenant, number + 1), secrets.token_bytes(DATA_KEY_BYTES))
            except FileExistsError:
                continue  # a concurrent rotation took this number; take the next one
            return self.describe(tenant)
        raise KeyUnavailable("could not rotate tenant {0}'s key: {1} concurrent rotations got in the way".format(tenant, _ROTATE_ATTEMPTS))

    def _usable_state(self, tenant: str) -> TenantKeyState:
        state = self.describe(tenant)
        if state.shredded:
            raise key_shredded(tenant, state.shredded_at)
        if not state.exists:
            raise KeyUnavailable("tenant {0} has no key in {1}; create it first (keel.postgres.tenant_key state=present)".format(tenant, self.directory))
        return state

    def shred(self, tenant: str) -> TenantKeyState:
        """Destroy every version; the tombstone goes first so a crash midway still counts as shredded.

        Overwriting before unlinking defeats a plain undelete on a classic
        filesystem, but it does NOT guarantee erasure on SSDs (wear levelling
        keeps old blocks), copy-on-write filesystems (btrfs, ZFS) or under
        snapshots and backups of this directory: there the old bytes may
        survive. Keep key directories off snapshots, or use KMS.
        """
        state = self.describe(tenant)
        if not state.exists and not state.shredded:
            return state  # nothing was ever created: nothing to destroy, nothing to remember
        numbers = [_version_number(version.key_id) or 0 for version in state.versions]
        if not state.shredded:
            tombstone = {"shredded_at": _now_iso(), "versions": ["v{0}".format(n) for n in numbers]}
            write_new_file(self._tombstone_path(tenant), (json.dumps(tombstone, sort_keys=True) + "\n").encode("utf-8"))
        for number in numbers:
            self._destroy(self._version_path(tenant, number))
        sync_directory(self._tenant_dir(tenant))
        return self.describe(tenant)

    @staticmethod
    def _destroy(path: str) -> None:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        with os.fdopen(descriptor, "wb") as stream:
            size = max(os.fstat(stream.fileno()).st_size, DATA_KEY_BYTES)
            stream.write(secrets.token_bytes(size))
            stream.flush()
            os.fsync(stream.fileno())
        os.unlink(path)

    def wrap(self, tenant: str, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError("a data key is {0} bytes, got {1}".format(DATA_KEY_BYTES, len(data_key)))
        current = self._usable_state(tenant).current
        if current is None:  # describe() always marks the highest version current
            raise KeyUnavailable("tenant {0} has no current key".format(tenant))
        number = _version_number(current.key_id) or 0
        nonce = secrets.token_bytes(NONCE_BYTES)
        kek = AESGCM(self._read_key(tenant, number))
        blob = nonce + kek.encrypt(nonce, data_key, canonical_aad(tenant, current.key_id, context))
        return WrappedKey(provider=self.name, key_id=current.key_id, blob=blob)

    def unwrap(self, tenant: str, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        number, nonce, ciphertext = self._parse_wrapped(tenant, wrapped)
        state = self.describe(tenant)
        if state.shredded:
            raise key_shredded(tenant, state.shredded_at)
        try:
            data_key = AESGCM(self._read_key(tenant, number)).decrypt(nonce, ciphertext, canonical_aad(tenant, wrapped.key_id, context))
        except InvalidTag:
            raise unwrap_failed(tenant, wrapped.key_id) from None
        return data_key

    def _parse_wrapped(self, tenant: str, wrapped: WrappedKey) -> Tuple[int, bytes, bytes]:
        if wrapped.provider != self.name:
            raise KeyUnavailable("this data key was wrapped by the {0!r} key provider, not {1!r}".format(wrapped.provider, self.name))
        number = _version_number(wrapped.key_id)
        if number is None:
            raise IntegrityFailed("wrapped key of tenant {0} names key {1!r}, which is no file key version".format(tenant, wrapped.key_id))
        if len(wrapped.blob) != NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES:
            raise unwrap_failed(tenant, wrapped.key_id)
        return number, wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:]
