"""The backup object stores against a real S3 server (SeaweedFS, which enforces Object Lock) and real directories.

Most behaviour is the same contract for both stores (write-once, locks that
refuse deletes, aborts that leave nothing), so those tests run once per store
kind; S3-only facts (versions, multipart uploads, bucket checks, a server
that dies mid-upload) have their own tests.
"""

from __future__ import annotations

import datetime
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import IncompleteUpload, Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store, s3_store, store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, ObjectLocked, StoreFailed

from tests.harness.s3_server import S3Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the smallest S3 allows, so several parts stay cheap
STORE_KINDS = ("s3", "file")
KEY = "tenant-a/backups/20261125T172200Z-3f9a1c2b/data.kbk"


# -- fixtures and helpers ---------------------------------------------------------


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def lock_for(mode: str | None, seconds: float = 3600, legal_hold: bool = False) -> Lock:
    return Lock(mode=mode, retain_until=utc_now() + datetime.timedelta(seconds=seconds) if mode else None, legal_hold=legal_hold)


def new_bucket(server: S3Server, object_lock: bool, **lock_configuration: Any) -> str:
    name = f"keel-store-test-{uuid.uuid4().hex[:12]}"
    admin = server.client()
    admin.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    if lock_configuration:
        admin.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", **lock_configuration})
    return name


def s3_options(server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    options = {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": server.endpoint_url,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "part_size": "5MiB",
    }
    options.update(extra)
    return options


@pytest.fixture(scope="module")
def locked_bucket(s3_server: S3Server) -> str:
    return new_bucket(s3_server, object_lock=True)


@pytest.fixture(scope="module")
def plain_bucket(s3_server: S3Server) -> str:
    return new_bucket(s3_server, object_lock=False)


@pytest.fixture
def s3(s3_server: S3Server, locked_bucket: str) -> ObjectStore:
    """An S3 store on the Object Lock bucket, under a prefix of its own so tests do not see each other."""
    return open_store(s3_options(s3_server, locked_bucket, prefix=f"test-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    root = tmp_path / "store"
    root.mkdir()
    return open_store({"type": "file", "path": str(root)})


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue("s3" if request.param == "s3" else "file_store")


def write_in_chunks(store: ObjectStore, key: str, data: bytes, lock: Lock, chunk: int = 700_001) -> Any:
    # An odd chunk size, so parts are cut across write() calls.
    writer = store.open_writer(key, lock)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.commit()


def read_in_chunks(store: ObjectStore, key: str, size: int = MiB) -> bytes:
    reader = store.open_reader(key)
    pieces = []
    try:
        while piece := reader.read(size):
            pieces.append(piece)
    finally:
        reader.close()
    return b"".join(pieces)


def wait_until(moment: datetime.datetime) -> None:
    # One second more: S3 keeps retain-until in whole seconds, rounded up by the store.
    time.sleep(max(0.0, (moment - utc_now()).total_seconds()) + 1.0)


def server_side_versions(store: Any, key: str) -> list[str]:
    """Every version and delete marker of ``key``, as the admin sees them."""
    full_key = store.full_key(key)
    listing = store.client.list_object_versions(Bucket=store.bucket, Prefix=full_key)
    entries = (listing.get("Versions") or []) + (listing.get("DeleteMarkers") or [])
    return [entry["VersionId"] for entry in entries if entry["Key"] == full_key]


# -- write-once and round trips (both stores) ------------------------------------------


def test_put_bytes_is_write_once(store: ObjectStore) -> None:
    stored = store.put_bytes("audit/2026/11/25/event.json", b"first\n", Lock())
    assert stored.size == 6

    with pytest.raises(StoreFailed, match="already exists; backups are never overwritten"):
        store.put_bytes("audit/2026/11/25/event.json", b"second\n", Lock())
    with pytest.raises(StoreFailed, match="already exists"):
        store.open_writer("audit/2026/11/25/event.json", Lock())

    assert store.get_bytes("audit/2026/11/25/event.json") == b"first\n"


def test_a_concurrent_writer_of_the_same_key_loses(store: ObjectStore) -> None:
    # Both pass the "does it exist" check; only the first to publish wins, the other must not overwrite.
    late = store.open_writer(KEY, Lock())
    late.write(b"late bytes")
    store.put_bytes(KEY, b"early bytes", Lock())

    with pytest.raises(StoreFailed, match="already exists"):
        late.commit()

    assert store.get_bytes(KEY) == b"early bytes"
    assert [obj.key for obj in store.list("")] == [KEY]
    assert store.incomplete_uploads("") == []


def test_multipart_object_round_trips_byte_exact(store: ObjectStore) -> None:
    data = os.urandom(3 * PART_SIZE + 123_457)  # three full parts and a short one

    stored = write_in_chunks(store, KEY, data, Lock())

    assert stored.key == KEY and stored.size == len(data)
    assert store.head(KEY).size == len(data)
    assert store.get_bytes(KEY) == data
    assert read_in_chunks(store, KEY) == data
    if store.kind == "s3":
        head = store.client.head_object(Bucket=store.bucket, Key=store.full_key(KEY), ChecksumMode="ENABLED")
        assert head["ETag"].endswith('-4"'), head["ETag"]  # four parts reached the server
        assert head["ChecksumSHA256"].endswith("-4")  # and each was checked against our SHA-256


@pytest.mark.parametrize("size", [0, 10])
def test_objects_smaller_than_a_part(store: ObjectStore, size: int) -> None:
    data = os.urandom(size)
    stored = write_in_chunks(store, KEY, data, Lock())
    assert stored.size == size
    assert store.get_bytes(KEY) == data


def test_abort_leaves_nothing(store: ObjectStore) -> None:
    writer = store.open_writer(KEY, lock_for("COMPLIANCE"))
    writer.write(os.urandom(2 * PART_SIZE + 1))

    writer.abort()
    writer.abort()  # idempotent

    assert store.head(KEY) is None
    assert list(store.list("")) == []
    assert store.incomplete_uploads("") == []
    with pytest.raises(StoreFailed, match="already aborted"):
        writer.write(b"more")
    # Nothing was published, so the key is still free.
    store.put_bytes(KEY, b"x", Lock())


def test_list_is_sorted_relative_and_filtered_by_prefix(store: ObjectStore) -> None:
    keys = ["tenant-b/backups/2/manifest.json", "tenant-a/backups/2/data.kbk", "tenant-a/backups/1/data.kbk", "tenant-ab/backups/1/data.kbk"]
    for key in keys:
        store.put_bytes(key, key.encode(), Lock())

    assert [obj.key for obj in store.list("")] == sorted(keys)
    assert [obj.key for obj in store.list("tenant-a/")] == ["tenant-a/backups/1/data.kbk", "tenant-a/backups/2/data.kbk"]
    assert [obj.key for obj in store.list("tenant-a")] == ["tenant-a/backups/1/data.kbk", "tenant-a/backups/2/data.kbk", "tenant-ab/backups/1/data.kbk"]
    assert list(store.list("nobody/")) == []


# -- locks (both stores) ------------------------------------------------------------------


def test_lock_set_on_upload_is_visible_in_head_and_list(store: ObjectStore) -> None:
    lock = lock_for("COMPLIANCE", seconds=3600, legal_hold=True)

    stored = write_in_chunks(store, KEY, os.urandom(PART_SIZE + 1), lock)

    for seen in (stored, store.head(KEY), next(iter(store.list("")))):
        assert seen.lock_mode == "COMPLIANCE"
        assert seen.legal_hold is True
        # Never earlier than asked (S3 keeps whole seconds; the store rounds up).
        assert datetime.timedelta(0) <= seen.retain_until - lock.retain_until < datetime.timedelta(seconds=1)


def test_compliance_lock_refuses_delete_and_keeps_the_bytes(store: ObjectStore) -> None:
    lock = lock_for("COMPLIANCE", seconds=3600)
    store.put_bytes(KEY, b"precious", lock)

    for bypass in (False, True):  # no bypass for COMPLIANCE
        with pytest.raises(ObjectLocked, match="COMPLIANCE mode until") as refused:
            store.delete(KEY, bypass_governance=bypass)
        assert KEY in refused.value.message
        assert store.head(KEY).retain_until.isoformat() in refused.value.message

    assert store.get_bytes(KEY) == b"precious"


def test_governance_lock_needs_the_bypass(store: ObjectStore) -> None:
    store.put_bytes(KEY, b"governed", lock_for("GOVERNANCE", seconds=3600))

    with pytest.raises(ObjectLocked, match=r"GOVERNANCE mode until .*\(bypass_governance"):
        store.delete(KEY)
    assert store.get_bytes(KEY) == b"governed"

    store.delete(KEY, bypass_governance=True)
    assert store.head(KEY) is None


def test_legal_hold_refuses_delete_even_with_the_bypass(store: ObjectStore) -> None:
    store.put_bytes(KEY, b"held", Lock(legal_hold=True))

    with pytest.raises(ObjectLocked, match="legal hold"):
        store.delete(KEY, bypass_governance=True)
    assert store.get_bytes(KEY) == b"held"


def test_delete_works_once_the_lock_lapsed(store: ObjectStore) -> None:
    lock = lock_for("COMPLIANCE", seconds=2)
    store.put_bytes(KEY, b"short-lived", lock)
    wait_until(lock.retain_until)

    store.delete(KEY)

    assert store.head(KEY) is None
    assert list(store.list("")) == []
    if store.kind == "s3":
        assert server_side_versions(store, KEY) == []
    store.delete(KEY)  # deleting what is gone is not an error


# -- S3 specifics -------------------------------------------------------------------------


def test_lock_travels_on_the_upload_itself(s3: Any) -> None:
    # No PutObjectRetention/PutObjectLegalHold after the fact: the object must never exist unlocked.
    calls: list[tuple[str, dict]] = []
    s3.client.meta.events.register("provide-client-params.s3.*", lambda params, model, **_kw: calls.append((model.name, dict(params))))
    lock = lock_for("COMPLIANCE", legal_hold=True)

    write_in_chunks(s3, KEY, os.urandom(PART_SIZE + 5), lock)

    names = [name for name, _params in calls]
    assert "PutObjectRetention" not in names and "PutObjectLegalHold" not in names
    created = next(params for name, params in calls if name == "CreateMultipartUpload")
    assert created["ObjectLockMode"] == "COMPLIANCE" and created["ObjectLockLegalHoldStatus"] == "ON"
    assert created["ObjectLockRetainUntilDate"] >= lock.retain_until
    parts = [params for name, params in calls if name == "UploadPart"]
    assert len(parts) == 2 and all(part["ContentMD5"] and part["ChecksumSHA256"] for part in parts)
    # And the server agrees.
    retention = s3.client.get_object_retention(Bucket=s3.bucket, Key=s3.full_key(KEY))["Retention"]
    assert retention["Mode"] == "COMPLIANCE"


def test_a_slow_network_holds_the_producer_at_three_parts(s3: Any) -> None:
    # Hold every part upload until released: write() must block instead of buffering the whole object.
    released = threading.Event()

    def hold_part(**_kw: Any) -> None:
        released.wait(60)  # returning None: a value would be taken as the response

    s3.client.meta.events.register("before-call.s3.UploadPart", hold_part)
    writer = s3.open_writer(KEY, Lock())
    chunk = MiB
    accepted = [0]

    def produce() -> None:
        for _number in range(10 * PART_SIZE // chunk):
            writer.write(b"\x5a" * chunk)
            accepted[0] += chunk

    producer = threading.Thread(target=produce)
    producer.start()
    settled_at = wait_until_steady(lambda: accepted[0])
    released.set()
    producer.join(60)
    stored = writer.commit()

    # One part being sent, one queued, one being filled (whose last write() is the one waiting).
    assert 2 * PART_SIZE < settled_at < 3 * PART_SIZE
    assert stored.size == 10 * PART_SIZE


def wait_until_steady(read: Callable[[], int], quiet: float = 0.5, timeout: float = 30.0) -> int:
    """The value of ``read()`` once it stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if read() != value:
            value, since = read(), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"still changing after {timeout}s")


def test_delete_removes_every_version_and_delete_marker(s3: Any) -> None:
    full_key = s3.full_key(KEY)
    s3.client.put_object(Bucket=s3.bucket, Key=full_key, Body=b"v1")
    s3.client.put_object(Bucket=s3.bucket, Key=full_key, Body=b"v2")
    s3.client.delete_object(Bucket=s3.bucket, Key=full_key)  # a delete marker hides both
    s3.put_bytes(KEY + ".other", b"a neighbour sharing the prefix", Lock())
    assert len(server_side_versions(s3, KEY)) == 3

    s3.delete(KEY)

    assert server_side_versions(s3, KEY) == []
    assert s3.head(KEY + ".other") is not None


def test_delete_refuses_before_deleting_any_version_when_one_is_locked(s3: Any) -> None:
    full_key = s3.full_key(KEY)
    s3.client.put_object(Bucket=s3.bucket, Key=full_key, Body=b"old, locked", ObjectLockLegalHoldStatus="ON")
    s3.client.put_object(Bucket=s3.bucket, Key=full_key, Body=b"new, unlocked")

    with pytest.raises(ObjectLocked, match="legal hold"):
        s3.delete(KEY)

    assert len(server_side_versions(s3, KEY)) == 2
    assert s3.get_bytes(KEY) == b"new, unlocked"


def test_server_refusal_is_reported_as_object_locked(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the store's own check, the server's AccessDenied must still come back in lock terms.
    monkeypatch.setattr(s3_store, "refuse_if_locked", lambda *args, **kwargs: None)
    s3.put_bytes(KEY, b"locked", lock_for("COMPLIANCE"))

    with pytest.raises(ObjectLocked, match="the server refused, it is locked in COMPLIANCE mode until") as refused:
        s3.delete(KEY)

    assert refused.value.cause == "AccessDenied"
    assert s3.get_bytes(KEY) == b"locked"


def test_a_part_the_server_rejects_fails_the_writer_and_publishes_nothing(s3: Any) -> None:
    def corrupt_checksum(params: dict, **_kw: Any) -> None:
        params["ChecksumSHA256"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

    s3.client.meta.events.register("provide-client-params.s3.UploadPart", corrupt_checksum)
    writer = s3.open_writer(KEY, Lock())

    with pytest.raises(StoreFailed, match=r"upload_part of .* failed: BadDigest"):
        writer.write(os.urandom(PART_SIZE))
        writer.commit()

    writer.abort()
    assert s3.head(KEY) is None
    assert s3.incomplete_uploads("") == []


def test_incomplete_uploads_are_listed_and_discarded(s3: Any) -> None:
    # An upload whose writer process died: started, one part sent, never completed nor aborted.
    full_key = s3.full_key(KEY)
    upload_id = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=full_key)["UploadId"]
    s3.client.upload_part(Bucket=s3.bucket, Key=full_key, UploadId=upload_id, PartNumber=1, Body=b"partial")

    uploads = s3.incomplete_uploads("tenant-a/")
    assert [(upload.key, upload.upload_id) for upload in uploads] == [(KEY, upload_id)]
    assert uploads[0].started is not None and uploads[0].started.tzinfo is not None
    assert s3.incomplete_uploads("tenant-b/") == []

    s3.discard_incomplete(uploads[0])
    s3.discard_incomplete(uploads[0])  # already gone: fine

    assert s3.incomplete_uploads("") == []
    assert s3.head(KEY) is None


def test_prefix_keeps_keys_relative(s3_server: S3Server, locked_bucket: str) -> None:
    store = open_store(s3_options(s3_server, locked_bucket, prefix="/keel/prod-{0}/".format(uuid.uuid4().hex[:6])))
    store.put_bytes("a/b.json", b"{}", Lock())

    assert store.describe()["prefix"].startswith("keel/prod-") and store.describe()["prefix"].endswith("/")
    assert [obj.key for obj in store.list("")] == ["a/b.json"]
    listed = s3_server.client().list_objects_v2(Bucket=locked_bucket, Prefix=store.describe()["prefix"])
    assert [entry["Key"] for entry in listed["Contents"]] == [store.describe()["prefix"] + "a/b.json"]
    assert s3_server.secret_key not in repr(store.describe())


def test_check_ready_and_default_retention(s3_server: S3Server, locked_bucket: str, plain_bucket: str) -> None:
    open_store(s3_options(s3_server, locked_bucket)).check_ready(lock_for("COMPLIANCE"))
    plain = open_store(s3_options(s3_server, plain_bucket))
    plain.check_ready(Lock())  # no lock asked: any bucket will do

    with pytest.raises(InvalidOption, match="does not have Object Lock enabled; lock mode GOVERNANCE was asked") as refused:
        plain.check_ready(lock_for("GOVERNANCE"))
    assert refused.value.field == "store.bucket"
    with pytest.raises(InvalidOption, match="does not have Object Lock enabled; a legal hold was asked"):
        plain.check_ready(Lock(legal_hold=True))

    missing = open_store(s3_options(s3_server, "keel-store-test-never-created"))
    with pytest.raises(InvalidOption, match="bucket 'keel-store-test-never-created' does not exist") as refused:
        missing.check_ready(Lock())
    assert refused.value.field == "store.bucket"

    assert plain.default_retention_days() is None
    assert open_store(s3_options(s3_server, locked_bucket)).default_retention_days() is None
    in_days = new_bucket(s3_server, object_lock=True, Rule={"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 7}})
    in_years = new_bucket(s3_server, object_lock=True, Rule={"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}})
    assert open_store(s3_options(s3_server, in_days)).default_retention_days() == 7
    assert open_store(s3_options(s3_server, in_years)).default_retention_days() == 365


def test_wrong_credentials_fail_without_showing_them(s3_server: S3Server, locked_bucket: str) -> None:
    store = open_store(s3_options(s3_server, locked_bucket, secret_key="not-the-secret-at-all"))

    with pytest.raises(StoreFailed) as failed:
        store.check_ready(Lock())

    assert "head_bucket" in failed.value.message
    assert "not-the-secret-at-all" not in failed.value.message and s3_server.access_key not in failed.value.message


def test_server_stopped_mid_upload(tmp_path: Path, cleanup_server: Callable[[S3Server], S3Server]) -> None:
    server = cleanup_server(S3Server(tmp_path / "s3"))
    server.start()
    bucket = new_bucket(server, object_lock=True)
    store = open_store(s3_options(server, bucket))
    writer = store.open_writer(KEY, lock_for("COMPLIANCE"))
    writer.write(os.urandom(PART_SIZE + 1))
    wait_for_parts(server, store, writer.upload_id, count=1)

    server.stop()
    with pytest.raises(StoreFailed, match=r"S3 endpoint http://127\.0\.0\.1:\d+ unreachable during upload_part") as failed:
        writer.write(os.urandom(PART_SIZE))
        writer.commit()
    writer.abort()

    assert server.secret_key not in failed.value.message
    assert writer.abort_problem and "unreachable during abort_multipart_upload" in writer.abort_problem
    with pytest.raises(StoreFailed, match="unreachable during head_object"):
        store.head(KEY)

    # Back up (on new ports): nothing was published; the upload the server missed the abort of is listed and discarded.
    server.start()
    store = open_store(s3_options(server, bucket))
    assert store.head(KEY) is None
    assert list(store.list("")) == []
    leftovers = store.incomplete_uploads("")
    assert [upload.upload_id for upload in leftovers] == [writer.upload_id]
    store.discard_incomplete(leftovers[0])
    assert store.incomplete_uploads("") == []


def wait_for_parts(server: S3Server, store: Any, upload_id: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = server.client().list_parts(Bucket=store.bucket, Key=store.full_key(KEY), UploadId=upload_id).get("Parts") or []
        if len({part["PartNumber"] for part in parts}) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} part(s) not uploaded within {timeout}s")


# -- file store specifics ------------------------------------------------------------------


def test_file_store_publishes_read_only_files_in_private_directories(file_store: Any) -> None:
    file_store.put_bytes(KEY, b"bytes", lock_for("GOVERNANCE"))
    path = Path(file_store.path_of(KEY))

    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    sidecar = path.parent / ".data.kbk.lock.json"
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o444
    assert sorted(entry.name for entry in path.parent.iterdir()) == [".data.kbk.lock.json", "data.kbk"]
    assert [obj.key for obj in file_store.list("")] == [KEY]


def test_file_store_leftovers_are_incomplete_uploads(file_store: Any) -> None:
    writer = file_store.open_writer(KEY, Lock())
    writer.write(b"the module process died here")
    del writer  # no commit, no abort
    # A lock record whose object was never published (killed between the two links).
    orphan = Path(file_store.path_of("tenant-a/backups/x/manifest.json"))
    orphan.parent.mkdir()
    orphan.with_name(".manifest.json.lock.json").write_text("{}")

    uploads = file_store.incomplete_uploads("tenant-a/")

    assert sorted(upload.key for upload in uploads) == ["tenant-a/backups/20261125T172200Z-3f9a1c2b/data.kbk", "tenant-a/backups/x/manifest.json"]
    assert list(file_store.list("")) == []
    for upload in uploads:
        file_store.discard_incomplete(upload)
    assert file_store.incomplete_uploads("") == []
    with pytest.raises(StoreFailed, match="not a leftover"):
        file_store.discard_incomplete(IncompleteUpload(key="x", upload_id="tenant-a/backups/x", started=None))


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a//b", "a/./b", "a/../b", ".hidden", "a/.data.kbk.lock.json", ""])
def test_file_store_refuses_keys_outside_its_directory(file_store: Any, key: str) -> None:
    with pytest.raises(StoreFailed, match="is not allowed"):
        file_store.put_bytes(key, b"x", Lock())


def test_file_store_check_ready(tmp_path: Path) -> None:
    open_store({"type": "file", "path": str(tmp_path)}).check_ready(lock_for("COMPLIANCE"))
    (tmp_path / "a-file").write_text("")
    for path in (tmp_path / "missing", tmp_path / "a-file"):
        with pytest.raises(InvalidOption, match="does not exist or is not a directory") as refused:
            open_store({"type": "file", "path": str(path)}).check_ready(Lock())
        assert refused.value.field == "store.path"


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        ({"type": "ftp"}, "store.type", "must be one of s3, file"),
        ({"type": "s3"}, "store.bucket", "required when store.type is s3"),
        ({"type": "s3", "bucket": "Not_A_Bucket"}, "store.bucket", "not a valid bucket name"),
        ({"type": "s3", "bucket": "keel-b", "part_size": "1MiB"}, "store.part_size", "between 5.0 MB and 5.0 GB"),
        ({"type": "s3", "bucket": "keel-b", "part_size": "lots"}, "store.part_size", "expected a size"),
        ({"type": "s3", "bucket": "keel-b", "prefix": "a/../b"}, "store.prefix", "not allowed"),
        ({"type": "s3", "bucket": "keel-b", "path": "/srv"}, "store.path", "does not apply to store.type s3"),
        ({"type": "file"}, "store.path", "required when store.type is file"),
        ({"type": "file", "path": "/srv", "bucket": "keel-b"}, "store.bucket", "does not apply to store.type file"),
        ({"type": "file", "path": "/srv", "secret_key": "s3cr3t"}, "store.secret_key", "does not apply to store.type file"),
    ],
)
def test_open_store_names_the_wrong_field(options: dict, field: str, problem: str) -> None:
    with pytest.raises(InvalidOption, match=problem) as refused:
        open_store(options)
    assert refused.value.field == field
    assert "s3cr3t" not in refused.value.message


def test_store_argument_spec() -> None:
    spec = store_argument_spec()
    assert spec["type"] == {"type": "str", "required": True, "choices": ["s3", "file"]}
    assert spec["part_size"]["default"] == "8MiB" and spec["prefix"]["default"] == ""
    assert all(spec[name].get("no_log") for name in ("access_key", "secret_key", "session_token"))
    assert open_store({"type": "s3", "bucket": "keel-b", "region": "us-east-1"}).part_size == 8 * MiB
    assert open_store({"type": "s3", "bucket": "keel-b", "region": "us-east-1", "part_size": 8 * MiB}).part_size == 8 * MiB


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    # The S3 writer's part thread must end with commit or abort, whatever happened.
    before = {thread.ident for thread in threading.enumerate()}
    yield
    stray = [thread.name for thread in threading.enumerate() if thread.ident not in before and thread.name == "keel-s3-parts"]
    assert stray == []
