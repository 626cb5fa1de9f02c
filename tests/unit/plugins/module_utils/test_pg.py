from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils import pg
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption


def params(**overrides):
    base = {key: None for key in pg.connection_argument_spec()}
    base.update(connect_params={}, connect_timeout=10)
    base.update(overrides)
    return base


def test_unset_options_are_left_to_libpq_environment(monkeypatch):
    monkeypatch.delenv("PGUSER", raising=False)
    kwargs = pg.connection_kwargs(params(), "keel.postgres/test")
    assert kwargs == {"user": "postgres", "connect_timeout": 10, "application_name": "keel.postgres/test"}


def test_pguser_beats_the_community_default(monkeypatch):
    monkeypatch.setenv("PGUSER", "ops")
    assert pg.connection_kwargs(params(), "x")["user"] == "ops"


def test_options_map_to_libpq_keywords():
    kwargs = pg.connection_kwargs(
        params(login_host="db1", port=6432, login_user="app", login_password="pw", db="shop", ssl_mode="verify-full",
               ca_cert="/etc/ca.pem", connect_params={"target_session_attrs": "read-write"}),
        "x",
    )
    assert kwargs == {"host": "db1", "port": 6432, "user": "app", "password": "pw", "dbname": "shop",
                      "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "connect_timeout": 10,
                      "target_session_attrs": "read-write", "application_name": "x"}


def test_unix_socket_wins_over_host():
    assert pg.connection_kwargs(params(login_host="db1", login_unix_socket="/run/pg"), "x")["host"] == "/run/pg"


@pytest.mark.parametrize("key", ["password", "PASSWORD", "passfile", "sslpassword", "dbname", "sslmode", "port"])
def test_connect_params_cannot_smuggle_owned_keywords(key):
    with pytest.raises(InvalidOption) as caught:
        pg.connection_kwargs(params(connect_params={key: "x"}), "x")
    assert caught.value.field == "connect_params"


def test_port_out_of_range_names_the_field():
    with pytest.raises(InvalidOption, match=r"^port: must be between 1 and 65535"):
        pg.connection_kwargs(params(port=70000), "x")


def test_target_description_never_contains_the_password():
    kwargs = pg.connection_kwargs(params(login_host="db1", login_password="hunter2", db="shop"), "x")
    assert "hunter2" not in pg.describe_target(kwargs)
    assert pg.redact("auth failed for hunter2", pg.secrets_in(kwargs)) == "auth failed for ********"
