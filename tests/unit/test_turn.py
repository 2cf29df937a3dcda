"""Short-lived TURN credentials: the scheme, its settings, the API route and joinResponse."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock

from privydrop.rooms import Rooms
from privydrop.settings import ApiSettings, ConfigError, Settings, TurnSettings
from privydrop.settings.sources import settings_from_options
from privydrop.signaling.handlers import install_signaling
from privydrop.socketio.server import SocketIOServer
from privydrop.turn import ice_server_source, ice_servers, rest_api_credential
from tests.unit.test_api import make_client
from tests.unit.test_signaling_handlers import ROOM, GatedStore, World

SECRET = "a-shared-secret-for-tests"
TURN = TurnSettings(
    secret=SECRET,
    urls=("turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"),
    credential_ttl_s=3600,
)


def test_credential_is_base64_hmac_sha1_of_the_user_name() -> None:
    """coturn accepts only the credential it computes itself from the shared secret.

    The expected value was computed with
    C{printf %s 1700000000:alice | openssl dgst -sha1 -hmac a-shared-secret-for-tests -binary | base64}.
    """
    assert rest_api_credential(SECRET, "1700000000:alice") == "HhtJSlU24d98DWEor6h97SFRTlM="


def test_user_name_carries_the_expiry_and_the_credential_signs_it() -> None:
    """A client gets a user name that expires TURN_CREDENTIAL_TTL seconds from now."""
    issued = ice_servers(TURN, 1_700_000_000.7, "sock1")
    assert issued is not None
    [server] = issued.as_json()["iceServers"]
    assert server["urls"] == list(TURN.urls)
    assert server["username"] == "1700003600:sock1"
    expected = hmac.new(SECRET.encode(), b"1700003600:sock1", hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == expected
    assert issued.as_json()["ttl"] == 3600


def test_no_credentials_without_turn() -> None:
    """Without TURN_SECRET and TURN_URLS nothing is issued (and nothing leaks a default)."""
    assert ice_servers(TurnSettings(), 0, "x") is None
    assert ice_server_source(TurnSettings(), Clock()) is None


def test_a_user_id_holding_the_separator_is_refused() -> None:
    """coturn splits the user name at the first ':'; an id with one would move the expiry."""
    with pytest.raises(ValueError):
        ice_servers(TURN, 0, "a:b")


def test_the_secret_is_not_in_the_settings_repr() -> None:
    """Settings are logged and printed; the shared secret must not appear."""
    assert SECRET not in repr(Settings(turn=TURN))


def test_turn_settings_from_the_environment() -> None:
    """An operator's TURN_* variables become the settings clients' credentials come from."""
    settings = settings_from_options(
        {},
        {
            "TURN_SECRET": SECRET,
            "TURN_URLS": " turn:198.51.100.7:3478?transport=tcp , stun:[2001:db8::1]:3478,",
            "TURN_CREDENTIAL_TTL": "600",
        },
        "/nonexistent",
    )
    assert settings.turn == TurnSettings(
        secret=SECRET,
        urls=("turn:198.51.100.7:3478?transport=tcp", "stun:[2001:db8::1]:3478"),
        credential_ttl_s=600,
    )
    assert settings.turn.enabled
    assert settings_from_options({}, {}, "/nonexistent").turn.credential_ttl_s == 24 * 3600


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"TURN_SECRET": SECRET}, "TURN_SECRET"),
        ({"TURN_URLS": "turn:h"}, "TURN_URLS"),
        ({"TURN_SECRET": "short", "TURN_URLS": "turn:h"}, "TURN_SECRET"),
        ({"TURN_SECRET": SECRET, "TURN_URLS": "https://h"}, "'https://h'"),
        ({"TURN_SECRET": SECRET, "TURN_URLS": "turn:h:70000"}, "'turn:h:70000'"),
        ({"TURN_SECRET": SECRET, "TURN_URLS": "stun:h?transport=udp"}, "stun:h"),
        ({"TURN_SECRET": SECRET, "TURN_URLS": "turn:h?transport=sctp"}, "sctp"),
        ({"TURN_SECRET": SECRET, "TURN_URLS": "turn:h", "TURN_CREDENTIAL_TTL": "10"},
         "TURN_CREDENTIAL_TTL"),
    ],
)
def test_bad_turn_settings_stop_start_up_naming_the_variable(
    environ: dict[str, str], named: str
) -> None:
    """A half-configured or mistyped TURN setting is an error at start-up, not a silent relay failure."""
    with pytest.raises(ConfigError, match=named.replace("?", r"\?").replace("[", r"\[")):
        settings_from_options({}, environ, "/nonexistent")


def test_ice_servers_route_answers_credentials_within_the_call_budget() -> None:
    """GET /api/ice_servers gives a browser a relay it can use, never cached, and counts as an API call."""
    client = make_client(
        Settings(turn=TURN, api=ApiSettings(rate_limit_calls=2, rate_limit_window_s=60))
    )
    code, headers, body = client.get("/api/ice_servers")
    assert code == 200
    assert headers.getRawHeaders("cache-control") == ["no-store"]
    assert body["ttl"] == 3600
    [server] = body["iceServers"]
    assert server["urls"] == list(TURN.urls)
    expiry, user = server["username"].split(":", 1)
    assert int(expiry) == int(client.clock.seconds()) + 3600
    assert user
    assert server["credential"] == rest_api_credential(SECRET, server["username"])
    # Each call issues its own user name.
    assert client.get("/api/ice_servers")[2]["iceServers"][0]["username"] != server["username"]
    assert client.get("/api/ice_servers")[0] == 429


def test_ice_servers_route_is_404_without_turn() -> None:
    """A deployment without coturn says so in JSON instead of handing out useless servers."""
    code, headers, body = make_client().get("/api/ice_servers")
    assert (code, body) == (404, {"error": "TURN is not configured"})
    assert headers.getRawHeaders("content-type")[0].startswith("application/json")


def turn_world(turn: TurnSettings) -> World:
    settings = Settings(turn=turn)
    clock = Clock()
    clock.advance(1_700_000_000)
    store = GatedStore(clock)
    rooms = Rooms(store, settings.rooms, clock)
    app = SocketIOServer(clock, settings.socketio)
    signaling = install_signaling(
        app.of("/"), rooms, settings, ice_servers=ice_server_source(turn, clock)
    )
    world = World(clock, store, rooms, app, signaling)
    world.create_room(ROOM)
    return world


def test_successful_join_carries_ice_servers_for_that_socket() -> None:
    """A socket that got into a room receives relay credentials with its joinResponse."""
    world = turn_world(TURN)
    client = world.client()
    client.emit("join", {"roomId": ROOM})
    response: dict[str, Any] = client.last("joinResponse")
    assert response["success"] is True
    [server] = response["iceServers"]
    assert server["username"] == "%d:%s" % (1_700_000_000 + 3600, client.id)
    assert server["credential"] == rest_api_credential(SECRET, server["username"])
    assert server["urls"] == list(TURN.urls)


def test_refused_joins_and_deployments_without_turn_carry_no_ice_servers() -> None:
    """Credentials go only to sockets in a room; without TURN the answer is the Node backend's."""
    world = turn_world(TURN)
    client = world.client()
    client.emit("join", {"roomId": "nosuchroom"})
    assert client.last("joinResponse") == {
        "success": False, "message": "Room does not exist", "roomId": "nosuchroom"
    }
    plain = turn_world(attrs.evolve(TURN, secret=None))
    other = plain.client()
    other.emit("join", {"roomId": ROOM})
    assert "iceServers" not in other.last("joinResponse")
