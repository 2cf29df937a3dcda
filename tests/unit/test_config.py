"""Settings from defaults, .env files, the environment and twistd options."""

from __future__ import annotations

from pathlib import Path

import pytest

from privydrop.settings import ConfigError, Settings
from privydrop.settings.sources import (
    VARIABLES,
    parse_env_file,
    parse_redis_url,
    settings_from_options,
)
from privydrop.tap import Options
from privydrop.web.origins import origin_allowed


def settings(environ: dict[str, str] | None = None, argv: list[str] | None = None,
             cwd: Path | None = None) -> Settings:
    options = Options()
    options.parseOptions(argv or [])
    return settings_from_options(options, environ or {}, str(cwd) if cwd else "/nonexistent")


def test_defaults_match_the_node_backend() -> None:
    """With nothing configured the server listens on 3001 in development with the memory store."""
    s = settings()
    assert s.environment == "development"
    assert s.listen == "tcp:3001"
    assert s.redis is None
    assert s.api.max_body_bytes == 100 * 1024
    assert (s.api.rate_limit_calls, s.api.rate_limit_window_s) == (600, 60)
    assert s.rooms.max_room_id_length == 64
    assert s.tracking.max_ref_length == 128
    assert s.rooms.join_rate_limit_enabled is True


def test_port_variables_and_option_precedence() -> None:
    """An operator's BACKEND_PORT/PORT is honoured, and --port or --listen beat them."""
    assert settings({"PORT": "4000"}).listen == "tcp:4000"
    assert settings({"PORT": "4000", "BACKEND_PORT": "4001"}).listen == "tcp:4001"
    assert settings({"BACKEND_PORT": "4001"}, ["--port", "5000"]).listen == "tcp:5000"
    assert (
        settings({"PORT": "4000"}, ["--listen", "tcp:0:interface=127.0.0.1"]).listen
        == "tcp:0:interface=127.0.0.1"
    )


@pytest.mark.parametrize(
    "environ, names",
    [
        ({"PORT": "abc"}, ["PORT", "abc"]),
        ({"BACKEND_PORT": "70000"}, ["BACKEND_PORT", "70000"]),
        ({"NODE_ENV": "staging"}, ["NODE_ENV", "staging"]),
        ({"REDIS_URL": "http://localhost:6379"}, ["REDIS_URL", "http://localhost:6379"]),
        ({"REDIS_URL": "redis://h:notaport/0"}, ["REDIS_URL"]),
        ({"REDIS_HOST": "h", "REDIS_PORT": "x"}, ["REDIS_PORT", "x"]),
        ({"API_RATE_LIMIT": "lots"}, ["API_RATE_LIMIT", "lots"]),
        ({"TRUSTED_PROXIES": "10.0.0.0/8,nonsense"}, ["TRUSTED_PROXIES", "nonsense"]),
        ({"CORS_ORIGIN": "example.com"}, ["CORS_ORIGIN", "example.com"]),
        ({"MAX_BODY_BYTES": "-1"}, ["MAX_BODY_BYTES", "-1"]),
        ({"DISABLE_JOIN_RATE_LIMIT": "maybe"}, ["DISABLE_JOIN_RATE_LIMIT", "maybe"]),
    ],
)
def test_invalid_values_name_the_variable_and_value(
    environ: dict[str, str], names: list[str]
) -> None:
    """A typo in the environment stops start-up with a message pointing at the exact line."""
    with pytest.raises(ConfigError) as caught:
        settings(environ)
    for name in names:
        assert name in str(caught.value)


def test_invalid_option_is_named_as_the_option() -> None:
    """A bad command-line value is reported as the option the operator typed."""
    with pytest.raises(ConfigError, match="--port.*'x'"):
        settings({}, ["--port", "x"])


def test_redis_url_password_is_masked_in_errors() -> None:
    """A malformed REDIS_URL error never prints the Redis password into logs."""
    with pytest.raises(ConfigError) as caught:
        settings({"REDIS_URL": "redis://:s3cret@host:99999/0"})
    assert "s3cret" not in str(caught.value)


def test_redis_url_parsing() -> None:
    """REDIS_URL with password, port and db reaches the store as given."""
    r = parse_redis_url("redis://:p%40ss@cache.internal:6380/2")
    assert (r.host, r.port, r.password, r.db) == ("cache.internal", 6380, "p@ss", 2)
    r = parse_redis_url("redis://localhost")
    assert (r.host, r.port, r.password, r.db) == ("localhost", 6379, None, 0)


def test_redis_from_node_variables() -> None:
    """The Node backend's REDIS_HOST/PORT/PASSWORD select Redis, with the timeouts."""
    s = settings({"REDIS_HOST": "redis", "REDIS_PORT": "6380", "REDIS_PASSWORD": "pw",
                  "REDIS_COMMAND_TIMEOUT": "0.5"})
    assert s.redis is not None
    assert (s.redis.host, s.redis.port, s.redis.password) == ("redis", 6380, "pw")
    assert s.redis.command_timeout == 0.5


def test_redis_option_beats_environment() -> None:
    """--redis overrides REDIS_HOST from the environment."""
    s = settings({"REDIS_HOST": "envhost"}, ["--redis", "redis://opthost:1/3"])
    assert s.redis is not None
    assert (s.redis.host, s.redis.port, s.redis.db) == ("opthost", 1, 3)


def test_env_file_chosen_by_node_env(tmp_path: Path) -> None:
    """Like the Node backend, .env.production is read when NODE_ENV=production."""
    (tmp_path / ".env.production").write_text(
        "# production\nBACKEND_PORT=3101\nREDIS_HOST='redis'\nCORS_ORIGIN=https://www.privydrop.app\n"
        "TURN_REALM=turn.example  # ignored: not ours\n"
    )
    (tmp_path / ".env.development").write_text("BACKEND_PORT=3102\n")
    prod = settings({"NODE_ENV": "production"}, cwd=tmp_path)
    assert prod.listen == "tcp:3101"
    assert prod.redis is not None and prod.redis.host == "redis"
    assert prod.env_file is not None and prod.env_file.endswith(".env.production")
    assert settings({}, cwd=tmp_path).listen == "tcp:3102"


def test_environment_beats_env_file_and_options_beat_both(tmp_path: Path) -> None:
    """Precedence: defaults < .env file < process environment < twistd options."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("BACKEND_PORT=1111\nMAX_BODY_BYTES=10\nMAX_REF_LENGTH=7\n")
    s = settings({"MAX_BODY_BYTES": "20"}, ["--env-file", str(env_file), "--max-ref-length", "9"])
    assert s.listen == "tcp:1111"
    assert s.api.max_body_bytes == 20
    assert s.tracking.max_ref_length == 9


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    """--env-file naming a file that is not there stops start-up instead of being ignored."""
    with pytest.raises(ConfigError, match="--env-file"):
        settings({}, ["--env-file", str(tmp_path / "missing.env")])


def test_env_file_error_in_file_names_the_file(tmp_path: Path) -> None:
    """A bad value in a .env file is reported with the file it came from."""
    (tmp_path / ".env.development").write_text("PORT=abc\n")
    with pytest.raises(ConfigError, match=r"PORT \(in \.env\.development\).*'abc'"):
        settings({}, cwd=tmp_path)


def test_parse_env_file_syntax() -> None:
    """The .env dialect operators write (quotes, export, comments) is understood."""
    text = (
        "# comment\n\n"
        "export A=1\n"
        "B = 'two words # not a comment'\n"
        'C="line\\nbreak"\n'
        "D=value # comment\n"
        "E=\n"
        "A=override\n"
    )
    assert parse_env_file(text) == {
        "A": "override",
        "B": "two words # not a comment",
        "C": "line\nbreak",
        "D": "value",
        "E": "",
    }
    with pytest.raises(ConfigError, match="line 2"):
        parse_env_file("A=1\nthis is not a setting\n", "x.env")
    with pytest.raises(ConfigError, match="unterminated"):
        parse_env_file("A='open\n")


def test_development_cors_allows_local_frontends() -> None:
    """In development the local front-end and LAN devices on :3002 may call the API."""
    s = settings({"CORS_ORIGIN": "https://www.privydrop.app"})
    for origin in ("https://www.privydrop.app", "http://localhost:3002", "http://192.168.1.20:3002"):
        assert origin_allowed(origin, s.origins)
    for origin in ("http://192.168.1.20:3002.evil.example", "http://localhost:3000",
                   "https://evil.example"):
        assert not origin_allowed(origin, s.origins)
    assert s.engine.origins == s.origins


def test_production_cors_is_the_configured_list() -> None:
    """In production only the configured origins are allowed (comma list, spaces ignored)."""
    s = settings({"NODE_ENV": "production", "REDIS_HOST": "r",
                  "CORS_ORIGIN": "https://a.example, https://b.example/"})
    assert origin_allowed("https://a.example", s.origins)
    assert origin_allowed("https://b.example", s.origins)
    assert not origin_allowed("http://localhost:3002", s.origins)
    assert not origin_allowed("http://192.168.1.20:3002", s.origins)
    assert s.engine.origins == s.origins


def test_join_rate_limit_switch_and_api_rate_limit() -> None:
    """DISABLE_JOIN_RATE_LIMIT=1 and API_RATE_LIMIT=0 turn the limits off for benchmarks."""
    s = settings({"DISABLE_JOIN_RATE_LIMIT": "1", "API_RATE_LIMIT": "0"})
    assert s.rooms.join_rate_limit_enabled is False
    assert s.api.rate_limit_calls == 0
    s = settings({"API_RATE_LIMIT": "5/10"})
    assert (s.api.rate_limit_calls, s.api.rate_limit_window_s) == (5, 10)
    assert settings({}, ["--disable-join-rate-limit"]).rooms.join_rate_limit_enabled is False


def test_trusted_proxies_parsed() -> None:
    """TRUSTED_PROXIES accepts addresses and ranges; empty trusts nobody."""
    s = settings({"TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12"})
    assert s.http.trusted_proxies == ("10.0.0.1/32", "172.16.0.0/12")
    assert settings({"TRUSTED_PROXIES": ""}).http.trusted_proxies == ()


def test_every_variable_has_an_option_or_env_name_and_help() -> None:
    """--help and the README can list every setting with its meaning."""
    options = Options()
    documented = {o[0] for o in options.optParameters} | {f[0] for f in options.optFlags}
    for variable in VARIABLES:
        assert variable.env or variable.option
        assert variable.help
        if variable.option:
            assert variable.option in documented


def test_readme_documents_every_setting() -> None:
    """An operator reading the README's configuration table finds every variable and option."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for variable in VARIABLES:
        if variable.env:
            assert "`%s`" % variable.env in readme
        if variable.option:
            assert "`--%s`" % variable.option in readme


def readme_row(variable: object) -> str:
    """A setting's row of the README's configuration table, as the table writes it."""
    env, option = getattr(variable, "env"), getattr(variable, "option")
    return "| %s | %s | `%s` | %s |" % (
        "`%s`" % env if env else "—",
        "`--%s`" % option if option else "—",
        getattr(variable, "default"),
        getattr(variable, "help"),
    )


def test_readme_table_is_the_settings_table() -> None:
    """The README's table says what --help says: same settings, order, defaults and meanings."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| Variable | Option | Default | Meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == [readme_row(v) for v in VARIABLES]


def test_realtime_limits_are_settable_and_validated() -> None:
    """Operators can tune Engine.IO/Socket.IO limits, and a bad value names the variable."""
    s = settings({"ENGINE_MAX_PACKETS_PER_PAYLOAD": "50", "ENGINE_UPGRADE_TIMEOUT": "2.5"},
                 ["--socketio-max-attachments", "3"])
    assert s.engine.max_packets_per_payload == 50
    assert s.engine.upgrade_timeout_s == 2.5
    assert s.socketio.max_attachments == 3
    assert s.engine.origins == s.origins
    with pytest.raises(ConfigError, match="SOCKETIO_MAX_PENDING_ACKS.*'many'"):
        settings({"SOCKETIO_MAX_PENDING_ACKS": "many"})


def test_join_rate_limit_setting() -> None:
    """JOIN_RATE_LIMIT tunes the Node backend's 2 joins per 5 s; nonsense is refused."""
    assert (settings().rooms.join_limit, settings().rooms.join_window_s) == (2, 5)
    s = settings({"JOIN_RATE_LIMIT": "4/10"})
    assert (s.rooms.join_limit, s.rooms.join_window_s) == (4, 10)
    with pytest.raises(ConfigError, match="JOIN_RATE_LIMIT"):
        settings({"JOIN_RATE_LIMIT": "0"})


def test_log_client_ips_reaches_every_layer_that_logs_peers() -> None:
    """LOG_CLIENT_IPS=1 must show peer addresses in Engine.IO/WebSocket logs too, not only HTTP."""
    assert settings().engine.log_client_ips is False
    s = settings({"LOG_CLIENT_IPS": "1"})
    assert s.http.log_client_ips is True
    assert s.engine.log_client_ips is True


def test_redis_channel_prefix_is_settable_and_validated() -> None:
    """Two deployments on one Redis server must be able to keep their signaling apart."""
    base = {"REDIS_HOST": "127.0.0.1"}
    assert settings(base).redis is not None
    assert settings(base).redis.channel_prefix == "privydrop"  # type: ignore[union-attr]
    s = settings({**base, "REDIS_CHANNEL_PREFIX": "staging"})
    assert s.redis is not None and s.redis.channel_prefix == "staging"
    for bad in ("", "a#b", "drop*"):
        with pytest.raises(ConfigError, match="REDIS_CHANNEL_PREFIX"):
            settings({**base, "REDIS_CHANNEL_PREFIX": bad})


def test_cluster_settings_are_read_and_checked_together() -> None:
    """A process must get two heartbeats in before the others may judge it
    dead; the stable name defaults to host and endpoint (empty here)."""
    loaded = settings(
        environ={
            "CLUSTER_HEARTBEAT_INTERVAL_MS": "500",
            "CLUSTER_NODE_TIMEOUT_MS": "3000",
            "CLUSTER_NODE_NAME": " web-1 ",
            "ROOM_CHECK_INTERVAL": "0",
        }
    )
    assert loaded.cluster.heartbeat_interval_ms == 500
    assert loaded.cluster.node_timeout_ms == 3000
    assert loaded.cluster.node_name == "web-1"
    assert loaded.rooms.check_interval_s == 0
    assert settings().cluster.node_timeout_ms == 10000
    with pytest.raises(ConfigError) as raised:
        settings(environ={"CLUSTER_HEARTBEAT_INTERVAL_MS": "6000"})
    assert "CLUSTER_NODE_TIMEOUT_MS (10000)" in str(raised.value)
    assert "CLUSTER_HEARTBEAT_INTERVAL_MS (6000)" in str(raised.value)


def test_per_client_limits_are_settable_and_validated() -> None:
    """Operators can tune the limits one client address may not pass: the
    IPv6 prefix taken as one client, the handshakes and sessions per client,
    the logs_debug budget and the CONNECT payload; nonsense names the variable."""
    s = settings()
    assert s.http.rate_limit_ipv6_prefix == 64
    assert (s.api.logs_debug_rate_limit_calls, s.api.logs_debug_rate_limit_window_s) == (30, 60)
    assert s.api.logs_debug_rate_limit_calls < s.api.rate_limit_calls
    assert s.engine.max_pending_sessions_per_ip < s.engine.max_sessions_per_ip
    assert s.socketio.max_auth_bytes == 4096
    s = settings({
        "RATE_LIMIT_IPV6_PREFIX": "56",
        "LOGS_DEBUG_RATE_LIMIT": "5/30",
        "ENGINE_MAX_SESSIONS_PER_IP": "12",
        "ENGINE_MAX_PENDING_SESSIONS_PER_IP": "3",
        "SOCKETIO_MAX_AUTH_BYTES": "512",
    })
    assert s.http.rate_limit_ipv6_prefix == 56
    assert (s.api.logs_debug_rate_limit_calls, s.api.logs_debug_rate_limit_window_s) == (5, 30)
    assert (s.engine.max_sessions_per_ip, s.engine.max_pending_sessions_per_ip) == (12, 3)
    assert s.socketio.max_auth_bytes == 512
    assert settings({}, ["--rate-limit-ipv6-prefix", "128"]).http.rate_limit_ipv6_prefix == 128
    assert settings({"LOGS_DEBUG_RATE_LIMIT": "0"}).api.logs_debug_rate_limit_calls == 0
    for bad in ("47", "129", "64.5", "x"):
        with pytest.raises(ConfigError, match="RATE_LIMIT_IPV6_PREFIX"):
            settings({"RATE_LIMIT_IPV6_PREFIX": bad})
    with pytest.raises(ConfigError, match="LOGS_DEBUG_RATE_LIMIT"):
        settings({"LOGS_DEBUG_RATE_LIMIT": "ten"})
    with pytest.raises(ConfigError, match="ENGINE_MAX_PENDING_SESSIONS_PER_IP"):
        settings({"ENGINE_MAX_PENDING_SESSIONS_PER_IP": "0"})


def test_log_level_setting() -> None:
    """Not given: None (info under twistd, or twist's own level); given: validated."""
    assert settings().log_level is None
    assert settings({"LOG_LEVEL": "debug"}).log_level == "debug"
    assert settings({"LOG_LEVEL": " Warning "}).log_level == "warn"
    assert settings({"LOG_LEVEL": "info"}, ["--log-level", "error"]).log_level == "error"
    with pytest.raises(ConfigError, match="LOG_LEVEL.*'verbose'"):
        settings({"LOG_LEVEL": "verbose"})


def test_listen_backlog_setting() -> None:
    assert settings().http.listen_backlog == 1024
    assert settings({"LISTEN_BACKLOG": "4096"}).http.listen_backlog == 4096
    assert settings({}, ["--listen-backlog", "128"]).http.listen_backlog == 128
    with pytest.raises(ConfigError, match="LISTEN_BACKLOG"):
        settings({"LISTEN_BACKLOG": "0"})
