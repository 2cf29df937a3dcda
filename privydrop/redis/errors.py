"""The exceptions of the Redis client, one family for every way a command fails.

A command sent through L{privydrop.redis.pool} fails with one of these, or
with the two txredisapi exceptions the codec (L{privydrop.redis.resp}) uses:
C{txredisapi.ResponseError} for an error reply of the server (C{NOSCRIPT},
C{WRONGTYPE}, ...) and C{txredisapi.InvalidData} for an argument that cannot
be encoded (nothing was written).

Users translate them into their own vocabulary (the store into
C{StoreUnavailable}, the cluster publisher into C{PublishError}); this module
knows neither.
"""

from __future__ import annotations


class RedisClientError(Exception):
    """Base of the client's exceptions: the command got no reply from Redis."""


class ClientClosed(RedisClientError):
    """The client was closed; it sends nothing any more."""


class NotConnected(RedisClientError):
    """No connection was ready for the command before its deadline."""


class HandshakeRefused(NotConnected):
    """Redis refused the connection handshake (a wrong password, a bad
    database index): a configuration problem, retried with back-off but
    reported, never waited out silently.

    @ivar command: the handshake command refused (C{"AUTH"}, C{"SELECT"}...).
    @ivar reply: the server's error reply, as it sent it.
    @ivar is_auth: whether the reply is about credentials.
    """

    def __init__(self, command: str, reply: str, is_auth: bool) -> None:
        self.command = command
        self.reply = reply
        self.is_auth = is_auth
        if is_auth:
            text = f"authentication failed ({reply})"
        else:
            text = f"{command} refused in the connection handshake ({reply})"
        super().__init__(text)


class ReplyTimeout(RedisClientError):
    """The reply did not come before the command's deadline.

    Its connection was aborted, so a late reply can never be read as the
    answer to another command; whether Redis ran the command is unknown.
    """


class ConnectionLost(RedisClientError):
    """The connection closed, or was given up, before the reply came.

    Whether Redis ran the command is unknown.
    """


__all__ = [
    "ClientClosed",
    "ConnectionLost",
    "HandshakeRefused",
    "NotConnected",
    "RedisClientError",
    "ReplyTimeout",
]
