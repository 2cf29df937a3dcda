"""Short-lived TURN credentials (coturn's shared-secret "TURN REST API").

L{privydrop.turn.credentials} is pure: given the settings, a time and an id
it computes what a client puts in C{RTCPeerConnection}'s C{iceServers}. The
REST API (C{GET /api/ice_servers}) and signaling (C{joinResponse}) hand the
same list out; coturn checks it with nothing but the shared secret.
"""

from privydrop.turn.credentials import (
    IceServers,
    IceServerSource,
    ice_server_source,
    ice_servers,
    rest_api_credential,
    rest_api_username,
)

__all__ = [
    "IceServers",
    "IceServerSource",
    "ice_server_source",
    "ice_servers",
    "rest_api_credential",
    "rest_api_username",
]
