from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import random
import re
import struct
from pathlib import Path

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup import stream_format as sf
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CS = sf.MIN_CHUNK_SIZE  # 64 KiB keeps the tests fast
SEALED = CS + sf.TAG_BYTES
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
WRAPPED = WrappedKey(provider="file", key_id="v1", blob=b"\x00wrapped\xff")
DOC = Path(__file__).resolve().parents[5] / "docs" / "backup_stream_format.md"


def payload(size, seed=1):
    return random.Random(seed).randbytes(size)


def header(chunk_size=CS, **kwargs):
    kwargs.setdefault("created_at", "2026-11-25T17:22:00Z")
    return sf.new_header("acme", "20261125T172200Z-3f9a1c2b", WRAPPED, chunk_size, **kwargs)


def seal(data, key=KEY, head=None, feeds=None):
    """The sealed stream of ``data``, fed in pieces of the sizes in ``feeds`` (one feed by default)."""
    head = head or header()
    sealer = sf.StreamSealer(head, key)
    out = [sealer.header_bytes]
    position = 0
    for size in feeds if feeds is not None else [len(data)]:
        out.append(sealer.feed(data[position:position + size]))
        position += size
    assert position == len(data)
    out.append(sealer.finish())
    return b"".join(out)


def open_all(stream, key=KEY):
    _header, chunks = sf.open_stream(io.BytesIO(stream), lambda _unused: key)
    return b"".join(chunks)


def split(stream):
    """(header block, [sealed chunks]) of a stream with full-size chunks."""
    head_len = len(sf.read_header(io.BytesIO(stream))[1])
    body = stream[head_len:]
    return stream[:head_len], [body[i:i + SEALED] for i in range(0, len(body), SEALED)]


def expect_integrity(stream, pattern, key=KEY):
    with pytest.raises(IntegrityFailed) as info:
        open_all(stream, key)
    assert re.search(pattern, info.value.message), info.value.message
    return info.value


def flip(data, at):
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("size, chunks", [(0, 1), (1, 1), (CS - 1, 1), (CS, 1), (CS + 1, 2), (3 * CS, 3)])
def test_round_trip_at_chunk_boundaries(size, chunks):
    data = payload(size)
    head = header()
    sealer = sf.StreamSealer(head, KEY)
    stream = sealer.header_bytes + sealer.feed(data) + sealer.finish()
    assert sealer.chunks == chunks
    assert sealer.plaintext_bytes == size
    assert sealer.sealed_bytes == size + chunks * sf.TAG_BYTES == len(stream) - len(sealer.header_bytes)
    assert open_all(stream) == data


@pytest.mark.parametrize("seed", range(8))
def test_any_feed_split_gives_the_same_bytes(seed):
    rng = random.Random(seed)
    size = rng.choice([0, 5, CS, 2 * CS + 7, 5 * CS]) + rng.randrange(3 * CS)
    data = payload(size, seed)
    feeds = []
    remaining = size
    while remaining:
        piece = min(remaining, rng.choice([0, 1, 100, CS - 1, CS, CS + 1, 3 * CS + 5, rng.randrange(4 * CS)]))
        feeds.append(piece)
        remaining -= piece
    head = header()
    reference = seal(data, head=head)
    assert seal(data, head=head, feeds=feeds) == reference  # sealing is deterministic for one header and key
    assert open_all(reference) == data


def test_feed_accepts_any_bytes_like_and_returns_sealed_bytes_only_when_more_data_follows():
    head = header()
    sealer = sf.StreamSealer(head, KEY)
    assert sealer.feed(bytearray(CS)) == b""  # a full chunk waits: it might be the last
    first = sealer.feed(memoryview(b"x"))
    assert len(first) == SEALED and sealer.chunks == 1
    assert sealer.feed(b"") == b""
    stream = sealer.header_bytes + first + sealer.finish()
    assert open_all(stream) == bytes(CS) + b"x"


def test_short_reads_from_pipes_are_handled():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def read(self, size=-1):
            return self._data.read(min(size, 999))

    data = payload(3 * CS + 10)
    _header, chunks = sf.open_stream(Trickle(seal(data)), lambda _unused: KEY)
    assert b"".join(chunks) == data


def test_feed_or_finish_after_finish_is_a_programming_error():
    sealer = sf.StreamSealer(header(), KEY)
    sealer.finish()
    with pytest.raises(RuntimeError):
        sealer.feed(b"more")
    with pytest.raises(RuntimeError):
        sealer.finish()


def test_sealed_bytes_do_not_contain_the_plaintext():
    marker = b"customer-4711-card-number"
    data = (payload(1000) + marker) * 300
    stream = seal(data)
    assert marker not in stream
    assert open_all(stream) == data


def test_opener_reports_completion_and_counts():
    data = payload(2 * CS + 3)
    stream = seal(data)
    head, head_bytes = sf.read_header(io.BytesIO(stream))
    opener = sf.StreamOpener(head, head_bytes, KEY)
    chunks = opener.iter_plaintext(io.BytesIO(stream[len(head_bytes):]))
    next(chunks)
    assert not opener.complete
    assert b"".join(chunks) and opener.complete
    assert (opener.chunks, opener.plaintext_bytes, opener.sealed_bytes) == (3, len(data), len(data) + 3 * sf.TAG_BYTES)


def test_a_good_stream_costs_one_decryption_per_chunk():
    stream = seal(payload(4 * CS + 1))
    head, head_bytes = sf.read_header(io.BytesIO(stream))
    opener = sf.StreamOpener(head, head_bytes, KEY)
    real = opener._cipher._aead
    calls = []

    class Counting:
        def decrypt(self, *args):
            calls.append(args[0])
            return real.decrypt(*args)

    opener._cipher._aead = Counting()
    list(opener.iter_plaintext(io.BytesIO(stream[len(head_bytes):])))
    assert len(calls) == 5


# --- the header ---------------------------------------------------------------------------------


def test_header_block_layout_and_canonical_json():
    head = header(compression="none")
    block = sf.encode_header(head)
    magic, version, length = struct.unpack(">6sHI", block[:12])
    assert (magic, version, length) == (b"KEELBK", 1, len(block) - 12)
    obj = json.loads(block[12:])
    assert block[12:] == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj == {
        "format": "keel-backup-stream", "version": 1, "tenant": "acme", "backup_id": "20261125T172200Z-3f9a1c2b",
        "created_at": "2026-11-25T17:22:00Z", "cipher": "AES-256-GCM", "compression": "none", "chunk_size": CS,
        "nonce_prefix": obj["nonce_prefix"], "wrapped_key": WRAPPED.as_dict(),
    }
    parsed, raw = sf.read_header(io.BytesIO(block + b"chunks"))
    assert parsed == head and raw == block


def test_new_headers_get_fresh_nonce_prefixes_and_a_utc_timestamp():
    first, second = sf.new_header("acme", "b", WRAPPED, CS), sf.new_header("acme", "b", WRAPPED, CS)
    assert len(first.nonce_prefix) == 7 and first.nonce_prefix != second.nonce_prefix
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first.created_at)


@pytest.mark.parametrize("chunk_size", [0, CS - 1, sf.MAX_CHUNK_SIZE + 1, True, "65536"])
def test_chunk_size_out_of_range_is_an_invalid_option(chunk_size):
    with pytest.raises(InvalidOption) as info:
        sf.new_header("acme", "b", WRAPPED, chunk_size)
    assert info.value.field == "chunk_size" and "out of range" in info.value.message


@pytest.mark.parametrize("kwargs, field", [
    (dict(tenant="Not A Tenant"), "tenant"),
    (dict(backup_id=""), "backup_id"),
    (dict(compression="gzip"), "compression"),
    (dict(created_at="2026-11-25T18:22:00+01:00"), "created_at"),
    (dict(created_at="yesterday"), "created_at"),
])
def test_bad_header_parameters_are_invalid_options(kwargs, field):
    args = dict(tenant="acme", backup_id="b", wrapped_key=WRAPPED, chunk_size=CS)
    args.update(kwargs)
    with pytest.raises(InvalidOption) as info:
        sf.new_header(**args)
    assert info.value.field == field


def test_bad_data_key_is_an_invalid_option():
    for key in (b"short", KEY + b"x", "x" * 32):
        with pytest.raises(InvalidOption) as info:
            sf.StreamSealer(header(), key)
        assert info.value.field == "data_key"


def header_with(obj_changes=None, raw_json=None, version=1):
    obj = header().as_dict()
    obj.update(obj_changes or {})
    body = raw_json if raw_json is not None else json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack(">6sHI", b"KEELBK", version, len(body)) + body


@pytest.mark.parametrize("block, pattern", [
    (b"PGDMP\x01\x0e\x00" + bytes(100), r"^not a keel backup stream \(bad magic\)$"),
    (b"KEE", r"^header is truncated"),
    (b"", r"^header is truncated"),
    (header_with(version=2), r"^unsupported stream format version 2\b"),
    (header_with()[:9], r"^header is truncated"),
    (header_with()[:40], r"^header is truncated: \d+ of its \d+ JSON bytes"),
    (header_with(raw_json=b"{not json"), r"^header is not valid JSON$"),
    (header_with(raw_json=b"[1]"), r"^header is not valid JSON: it is not an object"),
    (header_with(raw_json=b'{"tenant":"a","tenant":"b"}'), r"key 'tenant' appears twice"),
    (header_with(raw_json=b'{"chunk_size":NaN}'), r"^header is not valid JSON$"),
    (header_with(raw_json=b"\xff{}"), r"^header is not valid JSON$"),
    (header_with({"format": "other"}), r"^header format is 'other'"),
    (header_with({"version": 2}), r"says version 2 but the stream is version 1"),
    (header_with({"cipher": "ChaCha20"}), r"cipher 'ChaCha20' is not supported"),
    (header_with({"compression": "lz4"}), r"compression 'lz4'"),
    (header_with({"chunk_size": 1024}), r"chunk_size 1024 is out of range"),
    (header_with({"chunk_size": 65536.0}), r"chunk_size 65536.0 is out of range"),
    (header_with({"nonce_prefix": "AAAA"}), r"nonce_prefix is 3 bytes, not 7"),
    (header_with({"nonce_prefix": "!!!"}), r"'nonce_prefix' is not valid base64"),
    (header_with({"tenant": ""}), r"'tenant' is not a non-empty string"),
    (header_with({"extra": 1}), r"unknown field\(s\): extra"),
    (header_with({"wrapped_key": {"provider": "file", "key_id": "v1"}}), r"wrapped_key is missing field\(s\): blob"),
    (struct.pack(">6sHI", b"KEELBK", 1, 64 * 1024 + 1), r"more than the 65536 allowed"),
])
def test_malformed_headers_are_integrity_failures(block, pattern):
    with pytest.raises(IntegrityFailed) as info:
        sf.read_header(io.BytesIO(block))
    assert re.search(pattern, info.value.message), info.value.message


def test_opener_refuses_a_header_that_does_not_match_its_bytes():
    first, second = header(), header()
    with pytest.raises(InvalidOption):
        sf.StreamOpener(first, sf.encode_header(second), KEY)


def test_unwrap_sees_the_parsed_header():
    seen = []
    head = header()
    stream = seal(b"data", head=head)
    parsed, chunks = sf.open_stream(io.BytesIO(stream), lambda h: seen.append(h) or KEY)
    assert seen == [head] == [parsed] and b"".join(chunks) == b"data"


# --- keys and nonces ----------------------------------------------------------------------------


def rfc5869(key, info):
    prk = hmac.new(b"\x00" * 32, key, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_derived_keys_are_hkdf_sha256_with_distinct_labels():
    assert sf.derive_stream_key(KEY) == rfc5869(KEY, b"keel/stream/v1")
    assert sf.derive_manifest_mac_key(KEY) == rfc5869(KEY, b"keel/manifest-mac/v1")
    assert sf.derive_stream_key(KEY) != sf.derive_manifest_mac_key(KEY)


def test_chunks_follow_the_documented_nonce_and_aad():
    data = payload(CS + 5)
    stream = seal(data)
    head, head_bytes = sf.read_header(io.BytesIO(stream))
    chunks = split(stream)[1]
    aead = AESGCM(rfc5869(KEY, b"keel/stream/v1"))
    aad = hashlib.sha256(head_bytes).digest()
    assert aead.decrypt(head.nonce_prefix + b"\x00\x00\x00\x00\x00", chunks[0], aad) == data[:CS]
    assert aead.decrypt(head.nonce_prefix + b"\x00\x00\x00\x01\x01", chunks[1], aad) == data[CS:]


def test_the_reference_reader_in_the_docs_opens_a_stream(tmp_path):
    if not DOC.is_file():
        pytest.skip("docs/backup_stream_format.md is not part of this tree")
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    import zstandard

    data = payload(3 * CS + 11)
    path = tmp_path / "data.kbk"
    path.write_bytes(seal(zstandard.ZstdCompressor().compress(data)))
    namespace = {"__name__": "reference_reader"}
    exec(compile(snippet, str(DOC), "exec"), namespace)
    output = io.BytesIO()
    with path.open("rb") as stream:
        namespace["read_backup"](stream, KEY, output)
    assert output.getvalue() == data


# --- tampering ----------------------------------------------------------------------------------


def test_flipped_byte_in_the_header_fails_chunk_0():
    stream = seal(payload(2 * CS))
    at = stream.index(b'"tenant":"acme"') + len('"tenant":"a')
    tampered = stream[:at] + b"b" + stream[at + 1:]  # still a valid header, just not the authenticated one
    expect_integrity(tampered, r"^chunk 0 failed authentication: the backup is corrupted, or the header/data key do not belong to it$")


def test_flipped_byte_in_a_chunk_names_the_chunk():
    stream = seal(payload(3 * CS + 100))
    head = split(stream)[0]
    at = len(head) + SEALED + 1234
    error = expect_integrity(flip(stream, at), r"^chunk 1 failed authentication: the backup is corrupted")
    assert error.details == {"chunk": 1}


def test_flipped_byte_in_a_tag_names_the_chunk():
    stream = seal(payload(3 * CS + 100))
    head = split(stream)[0]
    at = len(head) + 3 * SEALED - 3  # inside chunk 2's tag
    expect_integrity(flip(stream, at), r"^chunk 2 failed authentication: the backup is corrupted")


def test_flipped_byte_in_the_final_chunk():
    stream = seal(payload(3 * CS + 100))
    expect_integrity(flip(stream, len(stream) - 50), r"^chunk 3 failed authentication: .*corrupted")


def test_truncated_at_a_chunk_boundary():
    stream = seal(payload(3 * CS + 100))
    head, chunks = split(stream)
    expect_integrity(head + chunks[0] + chunks[1], r"^stream ends after chunk 1 without its final chunk: truncated$")


def test_final_chunk_dropped_when_it_is_full_size():
    stream = seal(payload(3 * CS))
    head, chunks = split(stream)
    assert len(chunks) == 3
    expect_integrity(head + chunks[0] + chunks[1], r"^stream ends after chunk 1 without its final chunk: truncated$")


def test_truncated_mid_chunk():
    stream = seal(payload(3 * CS + 100))
    head = split(stream)[0]
    expect_integrity(stream[:len(head) + SEALED + 5000], r"^chunk 1 failed authentication: the stream ends inside it \(truncated\)")
    expect_integrity(stream[:len(head) + SEALED + 7], r"^stream ends 7 bytes into chunk 1, before its authentication tag: truncated$")


def test_truncated_right_after_the_header():
    stream = seal(payload(10))
    head = split(stream)[0]
    expect_integrity(head, r"^stream ends after the header without its final chunk: truncated$")


def test_swapped_chunks_are_out_of_order():
    stream = seal(payload(4 * CS + 100))
    head, chunks = split(stream)
    swapped = head + chunks[0] + chunks[2] + chunks[1] + chunks[3] + chunks[4]
    expect_integrity(swapped, r"^chunk 1 is out of order: it was sealed as chunk 2$")


def test_duplicated_chunk_is_out_of_order():
    stream = seal(payload(3 * CS + 100))
    head, chunks = split(stream)
    duplicated = head + chunks[0] + chunks[1] + chunks[1] + chunks[2] + chunks[3]
    expect_integrity(duplicated, r"^chunk 2 is out of order: it was sealed as chunk 1$")


def test_final_chunk_moved_forward_is_out_of_order():
    stream = seal(payload(3 * CS))
    head, chunks = split(stream)
    expect_integrity(head + chunks[0] + chunks[2] + chunks[1], r"^chunk 1 is out of order: it was sealed as chunk 2 \(the final chunk\)$")


def test_chunk_from_far_away_is_only_reported_as_failing():
    stream = seal(payload(20 * CS))
    head, chunks = split(stream)
    chunks[0], chunks[18] = chunks[18], chunks[0]
    expect_integrity(head + b"".join(chunks), r"^chunk 0 failed authentication: the backup is corrupted")


def test_data_after_a_full_size_final_chunk():
    stream = seal(payload(3 * CS))
    chunks = split(stream)[1]
    expect_integrity(stream + chunks[1], r"^unexpected data after the final chunk \(chunk 2\): bytes were appended")
    expect_integrity(stream + b"x", r"^unexpected data after the final chunk \(chunk 2\)")


def test_data_after_a_short_final_chunk():
    stream = seal(payload(3 * CS + 100))
    expect_integrity(stream + b"trailing", r"^chunk 3 failed authentication: .*bytes appended after its final chunk")


def test_header_of_another_backup_with_another_data_key():
    ours = seal(payload(2 * CS + 1), key=KEY)
    theirs = seal(payload(2 * CS + 1, seed=2), key=OTHER_KEY)
    spliced = split(theirs)[0] + b"".join(split(ours)[1])
    expect_integrity(spliced, r"^chunk 0 failed authentication: .*header/data key do not belong to it$", key=OTHER_KEY)


def test_header_of_another_backup_with_the_same_data_key():
    ours = seal(payload(2 * CS + 1), key=KEY)
    theirs = seal(payload(2 * CS + 1), key=KEY, head=header())  # same everything but the nonce prefix
    spliced = split(theirs)[0] + b"".join(split(ours)[1])
    expect_integrity(spliced, r"^chunk 0 failed authentication: .*header/data key do not belong to it$")


def test_wrong_data_key():
    stream = seal(payload(CS + 1))
    expect_integrity(stream, r"^chunk 0 failed authentication: .*header/data key do not belong to it$", key=os.urandom(32))


def test_bad_magic_through_open_stream():
    stream = seal(b"x")
    expect_integrity(b"XEELBK" + stream[6:], r"^not a keel backup stream \(bad magic\)$")


def test_unsupported_version_through_open_stream():
    stream = seal(b"x")
    expect_integrity(stream[:6] + b"\x00\x02" + stream[8:], r"^unsupported stream format version 2\b")
