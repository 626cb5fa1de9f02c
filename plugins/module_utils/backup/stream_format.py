# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The encrypted backup stream (``data.kbk``), format version 1.

    stream       = header_block || chunk_0 || ... || chunk_n      (chunk_n is the final chunk, n >= 0)
    header_block = b"KEELBK" || u16be version (1) || u32be json_length || header_json
    chunk_i      = AES-256-GCM(stream_key, nonce_i, plaintext_i, aad=SHA-256(header_block))
    nonce_i      = nonce_prefix (7 bytes) || u32be i || 0x01 if final else 0x00

Why it is shaped this way (docs/backup_stream_format.md is the full spec):

- Every chunk authenticates the whole header (its SHA-256 is the AAD), so a
  header cannot be edited or swapped for another backup's header.
- The chunk counter in the nonce pins each chunk to its position, so chunks
  cannot be reordered, dropped or repeated; the final flag in the nonce makes
  the end of the stream authenticated, so truncation at a chunk boundary is
  detected, and so are bytes appended after the final chunk.
- Chunks carry no length prefix: every non-final chunk holds exactly
  ``chunk_size`` plaintext bytes, so a reader reads ``chunk_size + 16`` bytes
  at a time and needs only one chunk of look-ahead to know which is last.
- The data key is fresh for every backup; the stream key and the manifest's
  MAC key are derived from it with HKDF under distinct labels, so one key is
  never used for two purposes.

Sealing happens in ``StreamSealer`` and opening in ``StreamOpener``; both work
on file-like objects and bytes only, and compression (the header's
``compression``) is applied by the caller before sealing.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import io
import json
import os
import struct
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import DATA_KEY_BYTES, WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:  # reported by KeelModule through missing_required_lib
    InvalidTag = None
    hashes = None
    AESGCM = None
    HKDF = None
    CRYPTOGRAPHY_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

MAGIC = b"KEELBK"
FORMAT_VERSION = 1
FORMAT_NAME = "keel-backup-stream"
CIPHER = "AES-256-GCM"
COMPRESSIONS = ("zstd", "none")

KIB = 1024
MIB = 1024 * KIB
MIN_CHUNK_SIZE = 64 * KIB
MAX_CHUNK_SIZE = 64 * MIB
DEFAULT_CHUNK_SIZE = 4 * MIB  # a suggestion for callers; the header always states the size used
MAX_CHUNKS = 2 ** 32  # the nonce's counter is 32 bits
MAX_HEADER_JSON = 64 * KIB

TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
STREAM_KEY_INFO = b"keel/stream/v1"
MANIFEST_MAC_KEY_INFO = b"keel/manifest-mac/v1"
RECORD_MAC_KEY_INFO = b"keel/verification-record-mac/v1"

# How far from its position a chunk's real counter is looked for when it fails to authenticate.
OUT_OF_ORDER_WINDOW = 16

_PREAMBLE = struct.Struct(">6sHI")  # magic, version, json length
_NONCE_SUFFIX = struct.Struct(">IB")  # counter, final flag
_HEADER_FIELDS = ("backup_id", "chunk_size", "cipher", "compression", "created_at", "format", "nonce_prefix",
                  "tenant", "version", "wrapped_key")
_WRAPPED_KEY_FIELDS = ("blob", "key_id", "provider")

BytesLike = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class StreamHeader:
    """What a reader needs before the first chunk: who the backup belongs to and how to open it."""

    tenant: str
    backup_id: str
    created_at: str  # ISO 8601 UTC, e.g. 2026-11-25T17:22:00Z
    cipher: str
    compression: str  # "zstd" or "none": what the concatenated plaintext is
    chunk_size: int  # plaintext bytes in every non-final chunk
    nonce_prefix: bytes  # 7 random bytes
    wrapped_key: WrappedKey
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def as_dict(self) -> Dict[str, Any]:
        """The header's JSON object, as written (the key order does not matter: it is serialized sorted)."""
        return {
            "format": self.format,
            "version": self.version,
            "tenant": self.tenant,
            "backup_id": self.backup_id,
            "created_at": self.created_at,
            "cipher": self.cipher,
            "compression": self.compression,
            "chunk_size": self.chunk_size,
            "nonce_prefix": base64.b64encode(self.nonce_prefix).decode("ascii"),
            "wrapped_key": self.wrapped_key.as_dict(),
        }


def check_chunk_size(chunk_size: object) -> int:
    """Chunks smaller than 64 KiB make the per-chunk overhead noticeable; bigger than 64 MiB
    make the reader's and writer's buffers (two chunks each) too large for small hosts."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidOption("chunk_size", "{0!r} is out of range: use {1} to {2} bytes (64 KiB to 64 MiB)".format(
            chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
    return chunk_size


def new_header(tenant: str, backup_id: str, wrapped_key: WrappedKey, chunk_size: int, compression: str = "zstd",
               created_at: Optional[str] = None) -> StreamHeader:
    """A header for a new backup, with a fresh random nonce prefix.

    The data key is fresh for every backup, so nonces never repeat under one key
    anyway; the random prefix keeps that true even if a data key were ever reused.
    """
    check_tenant_name(tenant)
    if not isinstance(backup_id, str) or not backup_id:
        raise InvalidOption("backup_id", "must be a non-empty string")
    if not isinstance(wrapped_key, WrappedKey):
        raise InvalidOption("wrapped_key", "must be a WrappedKey")
    check_chunk_size(chunk_size)
    if compression not in COMPRESSIONS:
        raise InvalidOption("compression", "{0!r} is not one of {1}".format(compression, ", ".join(COMPRESSIONS)))
    if created_at is None:
        created_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        _check_utc_timestamp(created_at)
    return StreamHeader(tenant=tenant, backup_id=backup_id, created_at=created_at, cipher=CIPHER, compression=compression,
                        chunk_size=chunk_size, nonce_prefix=os.urandom(NONCE_PREFIX_BYTES), wrapped_key=wrapped_key)


def _check_utc_timestamp(text: object) -> None:
    """created_at is for people and listings, but a local time there would mislead both."""
    problem = "must be an ISO 8601 timestamp in UTC, e.g. 2026-11-25T17:22:00Z"
    if not isinstance(text, str):
        raise InvalidOption("created_at", problem)
    try:
        parsed = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise InvalidOption("created_at", problem) from None
    if parsed.utcoffset() != datetime.timedelta(0):
        raise InvalidOption("created_at", problem)


def canonical_header_json(header: StreamHeader) -> bytes:
    """Sorted keys, no whitespace, ASCII: the same header always gives the same bytes."""
    return json.dumps(header.as_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode_header(header: StreamHeader) -> bytes:
    """The whole header block: magic, version, JSON length and the canonical JSON."""
    body = canonical_header_json(header)
    if len(body) > MAX_HEADER_JSON:
        raise InvalidOption("header", "its JSON is {0} bytes, more than the {1} a reader accepts".format(len(body), MAX_HEADER_JSON))
    return _PREAMBLE.pack(MAGIC, header.version, len(body)) + body


def read_header(reader: Any) -> Tuple[StreamHeader, bytes]:
    """Parse the header block from ``reader`` (anything with ``.read(n)``), leaving it at chunk 0.

    Returns the header and its exact bytes: the bytes, not a re-encoding, are what
    every chunk authenticates. Nothing here is authenticated yet: the header is
    only trusted once chunk 0 opens under it.
    """
    preamble = _read_exact(reader, _PREAMBLE.size)
    if preamble[:len(MAGIC)] != MAGIC[:len(preamble)]:
        raise IntegrityFailed("not a keel backup stream (bad magic)")
    if len(preamble) < len(MAGIC) + 2:
        raise IntegrityFailed("header is truncated: the stream ends after {0} bytes".format(len(preamble)))
    version = struct.unpack(">H", preamble[len(MAGIC):len(MAGIC) + 2])[0]
    if version != FORMAT_VERSION:
        raise IntegrityFailed("unsupported stream format version {0}: this reader knows version {1}".format(version, FORMAT_VERSION))
    if len(preamble) < _PREAMBLE.size:
        raise IntegrityFailed("header is truncated: the stream ends after {0} bytes".format(len(preamble)))
    json_length = _PREAMBLE.unpack(preamble)[2]
    if json_length > MAX_HEADER_JSON:
        raise IntegrityFailed("header is {0} bytes of JSON, more than the {1} allowed".format(json_length, MAX_HEADER_JSON))
    body = _read_exact(reader, json_length)
    if len(body) < json_length:
        raise IntegrityFailed("header is truncated: {0} of its {1} JSON bytes are present".format(len(body), json_length))
    return _parse_header_json(body, version), preamble + body


def _parse_header_json(body: bytes, version: int) -> StreamHeader:
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise IntegrityFailed("header is not valid JSON") from None
    if not isinstance(obj, dict):
        raise IntegrityFailed("header is not valid JSON: it is not an object")
    _check_fields(obj, _HEADER_FIELDS, "header")
    if obj["format"] != FORMAT_NAME:
        raise IntegrityFailed("header format is {0!r}, not {1!r}".format(obj["format"], FORMAT_NAME))
    if isinstance(obj["version"], bool) or obj["version"] != version:
        raise IntegrityFailed("header JSON says version {0!r} but the stream is version {1}".format(obj["version"], version))
    for name in ("tenant", "backup_id", "created_at"):
        if not isinstance(obj[name], str) or not obj[name]:
            raise IntegrityFailed("header field {0!r} is not a non-empty string".format(name))
    if obj["cipher"] != CIPHER:
        raise IntegrityFailed("header cipher {0!r} is not supported: only {1}".format(obj["cipher"], CIPHER))
    if obj["compression"] not in COMPRESSIONS:
        raise IntegrityFailed("header compression {0!r} is not one of {1}".format(obj["compression"], ", ".join(COMPRESSIONS)))
    chunk_size = obj["chunk_size"]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityFailed("header chunk_size {0!r} is out of range ({1} to {2})".format(chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
    nonce_prefix = _strict_b64(obj["nonce_prefix"], "nonce_prefix")
    if len(nonce_prefix) != NONCE_PREFIX_BYTES:
        raise IntegrityFailed("header nonce_prefix is {0} bytes, not {1}".format(len(nonce_prefix), NONCE_PREFIX_BYTES))
    wrapped = obj["wrapped_key"]
    if not isinstance(wrapped, dict):
        raise IntegrityFailed("header field 'wrapped_key' is not an object")
    _check_fields(wrapped, _WRAPPED_KEY_FIELDS, "header wrapped_key")
    for name in ("provider", "key_id"):
        if not isinstance(wrapped[name], str) or not wrapped[name]:
            raise IntegrityFailed("header wrapped_key field {0!r} is not a non-empty string".format(name))
    wrapped_key = WrappedKey(provider=wrapped["provider"], key_id=wrapped["key_id"], blob=_strict_b64(wrapped["blob"], "wrapped_key.blob"))
    return StreamHeader(tenant=obj["tenant"], backup_id=obj["backup_id"], created_at=obj["created_at"], cipher=obj["cipher"],
                        compression=obj["compression"], chunk_size=chunk_size, nonce_prefix=nonce_prefix, wrapped_key=wrapped_key,
                        format=obj["format"], version=version)


def _reject_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """Two parsers could pick different values of a repeated key from the same authenticated bytes."""
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise IntegrityFailed("header is not valid JSON: key {0!r} appears twice".format(key))
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError("{0} is not JSON".format(name))


def _check_fields(obj: Dict[str, Any], expected: Tuple[str, ...], where: str) -> None:
    """Version 1 has exactly these fields: a new field means a new format version."""
    missing = sorted(set(expected) - set(obj))
    if missing:
        raise IntegrityFailed("{0} is missing field(s): {1}".format(where, ", ".join(missing)))
    unknown = sorted(set(obj) - set(expected))
    if unknown:
        raise IntegrityFailed("{0} has unknown field(s): {1}".format(where, ", ".join(unknown)))


def _strict_b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise IntegrityFailed("header field {0!r} is not a base64 string".format(name))
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise IntegrityFailed("header field {0!r} is not valid base64".format(name)) from None


def _read_exact(reader: Any, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream: pipes and sockets return short reads."""
    data = reader.read(size)
    if data is None:
        data = b""
    if len(data) == size or not data:
        return bytes(data)
    parts = bytearray(data)
    while len(parts) < size:
        more = reader.read(size - len(parts))
        if not more:
            break
        parts += more
    return bytes(parts)


def _require_cryptography() -> None:
    if AESGCM is None:
        raise ImportError("the Python package 'cryptography' is required for encrypted backups:\n{0}".format(CRYPTOGRAPHY_IMPORT_ERROR))


def _hkdf(data_key: bytes, info: bytes) -> bytes:
    _require_cryptography()
    _check_data_key(data_key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(bytes(data_key))


def _check_data_key(data_key: object) -> None:
    if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != DATA_KEY_BYTES:
        raise InvalidOption("data_key", "must be {0} bytes".format(DATA_KEY_BYTES))


def derive_stream_key(data_key: bytes) -> bytes:
    """The AES-256-GCM key of the chunks: HKDF-SHA256(data_key, info="keel/stream/v1")."""
    return _hkdf(data_key, STREAM_KEY_INFO)


def derive_manifest_mac_key(data_key: bytes) -> bytes:
    """The manifest's HMAC key: HKDF-SHA256(data_key, info="keel/manifest-mac/v1"), never the stream key itself."""
    return _hkdf(data_key, MANIFEST_MAC_KEY_INFO)


def derive_record_mac_key(data_key: bytes) -> bytes:
    """The HMAC key of the backup's verification records: HKDF-SHA256(data_key, info="keel/verification-record-mac/v1")."""
    return _hkdf(data_key, RECORD_MAC_KEY_INFO)


def chunk_nonce(nonce_prefix: bytes, index: int, final: bool) -> bytes:
    """12 bytes: the prefix, the chunk's position and whether it ends the stream."""
    return nonce_prefix + _NONCE_SUFFIX.pack(index, 1 if final else 0)


class _ChunkCipher:
    """The AEAD, AAD and nonce prefix shared by the sealer and the opener."""

    def __init__(self, header: StreamHeader, header_bytes: bytes, data_key: bytes) -> None:
        if not isinstance(header.nonce_prefix, bytes) or len(header.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise InvalidOption("nonce_prefix", "must be {0} bytes".format(NONCE_PREFIX_BYTES))
        self._aead = AESGCM(derive_stream_key(data_key))
        self._aad = hashlib.sha256(header_bytes).digest()
        self._prefix = header.nonce_prefix

    def seal(self, index: int, plaintext: BytesLike, final: bool) -> bytes:
        return self._aead.encrypt(chunk_nonce(self._prefix, index, final), plaintext, self._aad)

    def open(self, index: int, sealed: bytes, final: bool) -> Optional[bytes]:
        """The plaintext, or None when the chunk does not authenticate as (index, final)."""
        try:
            return self._aead.decrypt(chunk_nonce(self._prefix, index, final), sealed, self._aad)
        except InvalidTag:
            return None


class StreamSealer:
    """Turns plaintext fed in pieces of any size into the sealed stream.

    ``header_bytes`` is written first, then whatever ``feed`` and ``finish``
    return, in order. A chunk is sealed as non-final only once a byte beyond it
    has arrived, because its final flag is part of its nonce: until then the
    last ``chunk_size`` bytes or fewer stay buffered, and ``finish`` seals them
    as the final chunk (empty only when nothing at all was fed).
    """

    def __init__(self, header: StreamHeader, data_key: bytes) -> None:
        _require_cryptography()
        check_chunk_size(header.chunk_size)
        self._header_bytes = encode_header(header)
        self._cipher = _ChunkCipher(header, self._header_bytes, data_key)
        self._chunk_size = header.chunk_size
        # One preallocated chunk, filled in place: no resizing, no re-slicing of a growing buffer.
        self._buffer = bytearray(self._chunk_size)
        self._filled = 0
        self._finished = False
        self.chunks = 0
        self.plaintext_bytes = 0
        self.sealed_bytes = 0

    @property
    def header_bytes(self) -> bytes:
        return self._header_bytes

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, data: BytesLike) -> bytes:
        """Sealed bytes ready to write (often b""): every full chunk that more data now follows."""
        if self._finished:
            raise RuntimeError("feed() after finish(): the stream is already sealed")
        view = memoryview(data).cast("B")
        size = len(view)
        self.plaintext_bytes += size
        chunk_size = self._chunk_size
        position = 0
        sealed: List[bytes] = []
        if self._filled:
            room = chunk_size - self._filled
            if size <= room:  # nothing follows the buffered bytes yet
                self._buffer[self._filled:self._filled + size] = view
                self._filled += size
                return b""
            self._buffer[self._filled:] = view[:room]
            position = room
            sealed.append(self._seal(self._buffer, final=False))
            self._filled = 0
        # Whole chunks straight from the caller's bytes, while at least one byte follows each.
        while size - position > chunk_size:
            sealed.append(self._seal(view[position:position + chunk_size], final=False))
            position += chunk_size
        rest = size - position
        if rest:
            self._buffer[:rest] = view[position:]
            self._filled = rest
        return b"".join(sealed)

    def finish(self) -> bytes:
        """Seal what is buffered as the final chunk; the stream is complete once this is written."""
        if self._finished:
            raise RuntimeError("finish() called twice: the stream is already sealed")
        self._finished = True
        final = self._seal(memoryview(self._buffer)[:self._filled], final=True)
        self._buffer = bytearray()
        self._filled = 0
        return final

    def _seal(self, plaintext: BytesLike, final: bool) -> bytes:
        if self.chunks >= MAX_CHUNKS:
            raise InvalidOption("chunk_size", "{0} bytes is too small for this much data: a stream holds at most 2**32 chunks".format(
                self._chunk_size))
        sealed = self._cipher.seal(self.chunks, plaintext, final)
        self.chunks += 1
        self.sealed_bytes += len(sealed)
        return sealed


class StreamOpener:
    """Opens the chunks that follow a header, checking each one's place in the stream.

    A yielded chunk is authentic, but the stream is only known to be complete
    when ``iter_plaintext`` ends without raising (``complete`` is then True):
    whoever restores from it must not commit anything before that.
    """

    def __init__(self, header: StreamHeader, header_bytes: bytes, data_key: bytes) -> None:
        _require_cryptography()
        header_bytes = bytes(header_bytes)
        parsed = _parse_header_block(header_bytes)
        if parsed != header:
            raise InvalidOption("header", "does not match header_bytes: pass both as read_header() returned them")
        self._cipher = _ChunkCipher(header, header_bytes, data_key)
        self._chunk_size = header.chunk_size
        self.complete = False
        self.chunks = 0
        self.plaintext_bytes = 0
        self.sealed_bytes = 0

    def iter_plaintext(self, reader: Any) -> Iterator[bytes]:
        """Yield each chunk's plaintext in order; raise IntegrityFailed naming the first bad chunk."""
        sealed_size = self._chunk_size + TAG_BYTES
        current = _read_exact(reader, sealed_size)
        if not current:
            raise IntegrityFailed("stream ends after the header without its final chunk: truncated")
        index = 0
        while True:
            if index >= MAX_CHUNKS:
                raise IntegrityFailed("stream has more than 2**32 chunks: it is corrupted")
            # A short read only happens at the end of the stream: then nothing follows.
            following = _read_exact(reader, sealed_size) if len(current) == sealed_size else b""
            final = not following
            plaintext = self._cipher.open(index, current, final)
            if plaintext is None:
                failure = IntegrityFailed(self._diagnose(index, current, final))
                failure.details = {"chunk": index}
                raise failure
            self.chunks += 1
            self.sealed_bytes += len(current)
            self.plaintext_bytes += len(plaintext)
            if final:
                self.complete = True
            yield plaintext
            if final:
                return
            current = following
            index += 1

    def _diagnose(self, index: int, sealed: bytes, final: bool) -> str:
        """Why chunk ``index`` failed: only run on failure, so its extra decryptions cost nothing normally."""
        if self._cipher.open(index, sealed, not final) is not None:
            if final:
                return "stream ends after chunk {0} without its final chunk: truncated".format(index)
            return "unexpected data after the final chunk (chunk {0}): bytes were appended to the stream".format(index)
        for other in _nearby_counters(index):
            for other_final in (False, True):
                if self._cipher.open(other, sealed, other_final) is not None:
                    return "chunk {0} is out of order: it was sealed as chunk {1}{2}".format(
                        index, other, " (the final chunk)" if other_final else "")
        if len(sealed) < TAG_BYTES:
            return "stream ends {0} bytes into chunk {1}, before its authentication tag: truncated".format(len(sealed), index)
        if final and len(sealed) < self._chunk_size + TAG_BYTES:
            return ("chunk {0} failed authentication: the stream ends inside it (truncated) or has bytes appended after its "
                    "final chunk, or the backup is corrupted, or the header/data key do not belong to it".format(index))
        return "chunk {0} failed authentication: the backup is corrupted, or the header/data key do not belong to it".format(index)


def _nearby_counters(index: int) -> Iterator[int]:
    """Counters within the window around ``index``, nearest first."""
    for distance in range(1, OUT_OF_ORDER_WINDOW + 1):
        for other in (index + distance, index - distance):
            if 0 <= other < MAX_CHUNKS:
                yield other


def _parse_header_block(header_bytes: bytes) -> StreamHeader:
    """The header in ``header_bytes``, which must hold exactly one header block."""
    reader = io.BytesIO(header_bytes)
    header, consumed = read_header(reader)
    if len(consumed) != len(header_bytes):
        raise InvalidOption("header_bytes", "holds {0} bytes after the header block".format(len(header_bytes) - len(consumed)))
    return header


def open_stream(reader: Any, unwrap: Callable[[StreamHeader], bytes]) -> Tuple[StreamHeader, Iterator[bytes]]:
    """Read the header, get its data key from ``unwrap(header)`` and return the plaintext chunks.

    ``unwrap`` sees the header before anything authenticates it: it must bind the
    wrapped key to the header's tenant and backup id (the key provider's context)
    and must not act on the header beyond that.
    """
    header, header_bytes = read_header(reader)
    opener = StreamOpener(header, header_bytes, unwrap(header))
    return header, opener.iter_plaintext(reader)
