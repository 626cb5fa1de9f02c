"""The test harness itself, against real servers: if these fail, no other integration test means anything."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError

from tests.harness import playbook as playbook_module
from tests.harness.collection_path import COLLECTION_LINK, REPO_ROOT
from tests.harness.playbook import PlaybookResult, TaskNotFound
from tests.harness.postgres_cluster import PostgresCluster
from tests.harness.processes import die_with_parent, wait_until_gone
from tests.harness.s3_server import S3Server

pytestmark = pytest.mark.integration

RunPlaybook = Callable[..., PlaybookResult]
# For helper processes that start servers: if pytest is SIGKILLed they must not go on starting them
# after the janitor has cleaned up.
DIES_WITH_US = die_with_parent(signal.SIGKILL)


# -- helpers ---------------------------------------------------------------------


def tcp_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket held by `pid`, from /proc."""
    inodes = _socket_inodes(pid)
    listeners = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_address, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = TCP_LISTEN
                listeners.add(_decode_address(local_address))
    return listeners


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except FileNotFoundError:  # the server closed this descriptor while we were listing them
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    if len(host) == 8:  # IPv4, little-endian
        return ".".join(str(octet) for octet in reversed(bytes.fromhex(host))), int(port, 16)
    return f"[ipv6 {host}]", int(port, 16)


def database_exists(cluster: PostgresCluster, name: str) -> bool:
    return bool(cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run harness code in a separate Python process, as `make sandbox-up` would."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        preexec_fn=DIES_WITH_US,
    )


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory under /tmp (pytest's tmp_path is 0700 root, closed to the postgres OS user)."""
    path = Path(tempfile.mkdtemp(prefix="keel-test-", dir="/tmp"))
    path.chmod(0o711)  # mkdtemp makes it 0700; the postgres OS user must traverse it
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- PostgreSQL ------------------------------------------------------------------


def test_cluster_answers_and_is_postgresql_15_or_newer(pg_cluster: PostgresCluster) -> None:
    [(version_number,)] = pg_cluster.execute("SHOW server_version_num")
    assert int(version_number) >= 150000


def test_cluster_has_the_settings_the_collection_relies_on(pg_cluster: PostgresCluster) -> None:
    settings = dict(
        pg_cluster.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            [["shared_preload_libraries", "wal_level", "max_wal_senders", "fsync", "server_encoding"]],
        )
    )
    assert settings == {
        "shared_preload_libraries": "pg_stat_statements",
        "wal_level": "replica",
        "max_wal_senders": "5",
        "fsync": "off",
        "server_encoding": "UTF8",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has to switch to the postgres OS user")
def test_cluster_runs_as_postgres_os_user_when_we_are_root(pg_cluster: PostgresCluster) -> None:
    postgres_uid = pwd.getpwnam("postgres").pw_uid
    assert pg_cluster.pid is not None
    assert os.stat(f"/proc/{pg_cluster.pid}").st_uid == postgres_uid
    assert pg_cluster.data_dir.stat().st_uid == postgres_uid


def test_cluster_listens_only_on_loopback(pg_cluster: PostgresCluster) -> None:
    assert pg_cluster.pid is not None
    assert tcp_listeners(pg_cluster.pid) == {("127.0.0.1", pg_cluster.port)}


def test_pg_db_is_an_empty_database_of_its_own(pg_cluster: PostgresCluster, pg_db: str) -> None:
    assert pg_db != "postgres"
    [(user_tables,)] = pg_cluster.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", dbname=pg_db)
    assert user_tables == 0
    with psycopg.connect(pg_cluster.dsn(dbname=pg_db)) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == (pg_db,)


def test_temporary_database_is_dropped_even_while_a_client_is_connected(pg_cluster: PostgresCluster) -> None:
    with pg_cluster.temporary_database() as name:
        assert database_exists(pg_cluster, name)
        lingering_client = pg_cluster.connect(name)
    try:
        assert not database_exists(pg_cluster, name)
    finally:
        lingering_client.close()


def test_detached_cluster_outlives_its_starter_and_stops_from_another_object(
    scratch_dir: Path, cleanup_server: Callable[[PostgresCluster], PostgresCluster]
) -> None:
    base_dir = scratch_dir / "pg"
    cluster = cleanup_server(PostgresCluster(base_dir))
    started = run_python(
        f"""
        from tests.harness.postgres_cluster import PostgresCluster
        cluster = PostgresCluster({str(base_dir)!r})
        cluster.start(detach=True)
        print(cluster.pid, cluster.port)
        """
    )
    pid, port = (int(value) for value in started.stdout.split())

    assert cluster.pid == pid, "the starter has exited, the postmaster must still run"
    assert cluster.port == port
    assert cluster.execute("SELECT 1") == [(1,)]

    cluster.stop()
    assert wait_until_gone(pid, timeout=5)
    assert not cluster.is_running
    assert not (cluster.data_dir / "postmaster.pid").exists()
    cluster.stop()  # idempotent


@pytest.mark.parametrize("server_class", [PostgresCluster, S3Server], ids=["postgres", "s3"])
def test_child_server_dies_with_a_killed_test_process(
    server_class: type[PostgresCluster] | type[S3Server],
    scratch_dir: Path,
    cleanup_server: Callable[[PostgresCluster | S3Server], PostgresCluster | S3Server],
) -> None:
    """SIGKILL runs no Python cleanup; the parent-death signal must stop the server anyway."""
    server = cleanup_server(server_class(scratch_dir / "server"))
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from tests.harness.{server_class.__module__.rsplit(".", 1)[1]} import {server_class.__name__}
                server = {server_class.__name__}({str(scratch_dir / "server")!r})
                server.start()
                print(server.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=DIES_WITH_US,
    )
    try:
        assert starter.stdout is not None
        server_pid = int(starter.stdout.readline())
        assert server.pid == server_pid
    finally:
        starter.kill()
        starter.wait()
    # If it survived, cleanup_server still stops it: both classes find a server through its directory.
    assert wait_until_gone(server_pid, timeout=40), f"{server_class.__name__} outlived its killed parent"


# -- S3 -----------------------------------------------------------------------------


@pytest.fixture
def locked_bucket(s3_server: S3Server) -> str:
    name = f"lock-test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_s3_refuses_to_delete_a_locked_object_version(s3_server: S3Server, locked_bucket: str) -> None:
    client = s3_server.client()
    retain_until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    version = client.put_object(
        Bucket=locked_bucket,
        Key="backup.bin",
        Body=b"immutable",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=retain_until,
    )["VersionId"]

    with pytest.raises(ClientError) as refusal:
        client.delete_object(Bucket=locked_bucket, Key="backup.bin", VersionId=version)

    assert refusal.value.response["Error"]["Code"] == "AccessDenied"
    body = client.get_object(Bucket=locked_bucket, Key="backup.bin", VersionId=version)["Body"].read()
    assert body == b"immutable"


@pytest.mark.parametrize(
    ("access_key", "secret_key", "expected_code"),
    [
        ("KEELUNKNOWNKEY000000", "whatever-secret", "InvalidAccessKeyId"),
        (None, "a-wrong-secret-for-the-right-key", "SignatureDoesNotMatch"),
    ],
    ids=["unknown-key", "wrong-secret"],
)
def test_s3_refuses_wrong_credentials(s3_server: S3Server, access_key: str | None, secret_key: str, expected_code: str) -> None:
    intruder = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=access_key or s3_server.access_key,
        aws_secret_access_key=secret_key,
        region_name=s3_server.region,
    )
    with pytest.raises(ClientError) as refusal:
        intruder.list_buckets()
    assert refusal.value.response["Error"]["Code"] == expected_code


def test_s3_server_listens_only_on_loopback_and_on_its_own_ports(s3_server: S3Server) -> None:
    assert s3_server.pid is not None
    listeners = tcp_listeners(s3_server.pid)
    assert {address for address, _port in listeners} == {"127.0.0.1"}
    # Anything else would be one of weed's fixed defaults (8333, 9333, 23646...), colliding between runs.
    assert {port for _address, port in listeners} <= set(s3_server.ports.values())


# -- ansible-playbook --------------------------------------------------------------

PASSING_PLAY = """
- name: Harness smoke test
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Remember the answer
      ansible.builtin.set_fact:
        answer: "{{ given_answer }}"
    - name: Check the answer
      ansible.builtin.assert:
        that: answer == "42"
"""

FAILING_PLAY = """
- name: Harness failure test
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Insist on the impossible
      ansible.builtin.assert:
        that: 1 == 2
        fail_msg: one is not two
    - name: Never reached
      ansible.builtin.debug:
        msg: unreachable
"""


def test_run_playbook_returns_parsed_task_results(run_playbook: RunPlaybook) -> None:
    result = run_playbook(PASSING_PLAY, extra_vars={"given_answer": "42"})

    result.assert_ok()
    assert [(task["name"], task["action"], task["status"]) for task in result.tasks] == [
        ("Remember the answer", "ansible.builtin.set_fact", "ok"),
        ("Check the answer", "ansible.builtin.assert", "ok"),
    ]
    assert result.task("Remember the answer")["result"]["ansible_facts"] == {"answer": "42"}
    assert result.task("Check the answer")["host"] == "localhost"
    assert result.failed_tasks == []
    assert "PLAY RECAP" in result.stdout


def test_run_playbook_reports_a_failed_task(run_playbook: RunPlaybook) -> None:
    result = run_playbook(FAILING_PLAY)

    assert result.rc != 0
    assert [task["name"] for task in result.failed_tasks] == ["Insist on the impossible"]
    assert result.task("Insist on the impossible")["result"]["msg"] == "one is not two"
    with pytest.raises(TaskNotFound, match="Insist on the impossible"):
        result.task("Never reached")
    with pytest.raises(AssertionError, match="one is not two"):
        result.assert_ok()


def test_run_playbook_accepts_a_path_and_keeps_extra_vars_off_the_command_line(
    run_playbook: RunPlaybook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    playbook_file = tmp_path / "play.yml"
    playbook_file.write_text(PASSING_PLAY)
    command_lines: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        command_lines.append(list(argv))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(playbook_module.subprocess, "Popen", recording_popen)

    run_playbook(playbook_file, extra_vars={"given_answer": "42", "db_password": "s3cr3t-Pa55"}).assert_ok()

    assert command_lines, "ansible-playbook was not started through subprocess.Popen"
    assert not any("s3cr3t-Pa55" in argument for argv in command_lines for argument in argv)


def test_run_playbook_uses_the_working_tree_as_keel_postgres(run_playbook: RunPlaybook) -> None:
    # An unknown module fails at parse time, so a skipped task proves keel.postgres resolved.
    result = run_playbook(
        textwrap.dedent(
            """
            - hosts: localhost
              gather_facts: false
              tasks:
                - name: Resolve a module of the collection
                  keel.postgres.preflight: {}
                  when: false
            """
        )
    )

    result.assert_ok()
    assert result.task("Resolve a module of the collection")["status"] == "skipped"
    assert COLLECTION_LINK.resolve() == REPO_ROOT


# -- sandbox CLI --------------------------------------------------------------------


def test_sandbox_up_status_down(scratch_dir: Path, cleanup_server: Callable[..., object]) -> None:
    cleanup_server(PostgresCluster(scratch_dir / "postgres"))
    cleanup_server(S3Server(scratch_dir / "s3"))

    def sandbox(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.harness.sandbox", *arguments, "--state-dir", str(scratch_dir)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            preexec_fn=DIES_WITH_US,
        )

    up = sandbox("up")
    assert up.returncode == 0, up.stdout + up.stderr
    description = json.loads((scratch_dir / "sandbox.json").read_text())
    credentials = json.loads((scratch_dir / "s3-credentials.json").read_text())
    assert (scratch_dir / "s3-credentials.json").stat().st_mode & 0o777 == 0o600
    assert (scratch_dir / "sandbox.env").stat().st_mode & 0o777 == 0o600
    assert credentials["aws_secret_access_key"] not in (scratch_dir / "sandbox.json").read_text()

    postgres = description["postgres"]
    dsn = f"host={postgres['host']} port={postgres['port']} user={postgres['user']} dbname={postgres['database']}"
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("keel_demo",)
    s3 = boto3.client(
        "s3",
        endpoint_url=description["s3"]["endpoint_url"],
        region_name=description["s3"]["region"],
        **credentials,
    )
    lock = s3.get_object_lock_configuration(Bucket=description["s3"]["bucket"])
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"

    again = sandbox("up")
    assert again.returncode == 0 and "already running" in again.stdout
    status = sandbox("status")
    assert status.stdout.count("running") == 2, status.stdout

    down = sandbox("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not PostgresCluster(scratch_dir / "postgres").is_running
    assert not S3Server(scratch_dir / "s3").is_running
    assert not (scratch_dir / "sandbox.env").exists()
    assert sandbox("down").returncode == 0, "down must succeed when nothing runs"


def test_a_timed_out_playbook_leaves_no_module_running(tmp_path):
    from tests.harness.playbook import PlaybookTimeout, run_playbook
    from tests.harness.processes import pids_with_argument

    marker = "{0}.5".format(abs(hash(str(tmp_path))) % 1000 + 37)  # a sleep length no other process uses
    playbook = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep {0}\n".format(
        marker)
    with pytest.raises(PlaybookTimeout):
        run_playbook(playbook, timeout=4)
    deadline = time.monotonic() + 10
    while pids_with_argument(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_with_argument(marker) == []
