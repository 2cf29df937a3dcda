"""coturn's TURN REST API credentials: an expiry in the user name, signed.

The scheme (coturn's C{use-auth-secret} with C{static-auth-secret}, from the
"REST API for access to TURN services" draft):

  - user name: C{<expiry>:<id>}, the expiry as Unix seconds and any id
    (coturn's default C{rest-api-separator} is C{:});
  - credential: C{base64(HMAC-SHA1(secret, user name))}.

coturn recomputes the credential from the user name and refuses the user once
the expiry has passed, on every authenticated request (allocate, refresh,
permission), so nothing is stored on either side and a credential that leaks
is worth nothing after its expiry. This module does no I/O and reads no
clock: callers pass C{now}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Callable

import attrs
from twisted.internet.interfaces import IReactorTime

from privydrop.settings import TurnSettings


def rest_api_username(expiry: int, user_id: str) -> str:
    """The user name coturn parses: C{<expiry>:<id>}.

    @param expiry: Unix seconds after which coturn refuses it.
    @param user_id: who it was issued to (shows in coturn's logs); must not
        hold the separator C{:}.
    @raise ValueError: when C{user_id} holds C{:}.
    """
    if ":" in user_id:
        raise ValueError("a TURN user id cannot hold ':'")
    return "%d:%s" % (expiry, user_id)


def rest_api_credential(secret: str, username: str) -> str:
    """C{base64(HMAC-SHA1(secret, username))}, the password coturn expects."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@attrs.frozen
class IceServers:
    """The ICE servers of one client, valid for C{ttl} seconds.

    @ivar servers: the C{iceServers} list of C{RTCConfiguration}: one entry
        with every configured URL, the user name and the credential.
    @ivar ttl: seconds the credential stays valid from when it was made.
    """

    servers: tuple[dict[str, Any], ...]
    ttl: int

    def as_json(self) -> dict[str, Any]:
        """The body of C{GET /api/ice_servers}: C{{"iceServers": [...], "ttl": N}}."""
        return {"iceServers": [dict(server) for server in self.servers], "ttl": self.ttl}


def ice_servers(settings: TurnSettings, now: float, user_id: str) -> IceServers | None:
    """Credentials for one client, or None when TURN is not configured.

    @param settings: the shared secret, the URLs and the credential's life.
    @param now: the current Unix time.
    @param user_id: an id for coturn's logs (a socket id, or a random one);
        must not hold C{:}.
    @raise ValueError: when C{user_id} holds C{:}.
    """
    if not settings.enabled or settings.secret is None:
        return None
    return _issue(settings.secret, settings, now, user_id)


def _issue(secret: str, settings: TurnSettings, now: float, user_id: str) -> IceServers:
    username = rest_api_username(int(now) + settings.credential_ttl_s, user_id)
    server = {
        "urls": list(settings.urls),
        "username": username,
        "credential": rest_api_credential(secret, username),
    }
    return IceServers(servers=(server,), ttl=settings.credential_ttl_s)


#: Credentials for the client of that id, now (see L{ice_server_source}).
IceServerSource = Callable[[str], IceServers]


def ice_server_source(settings: TurnSettings, clock: IReactorTime) -> IceServerSource | None:
    """A callable issuing credentials at the clock's time, or None without TURN.

    The REST API and signaling each hold one, so both hand out the same list.
    """
    secret = settings.secret
    if not settings.enabled or secret is None:
        return None

    def issue(user_id: str) -> IceServers:
        return _issue(secret, settings, clock.seconds(), user_id)

    return issue
