"""The connection handshake: what every new connection says before it is used.

In this order, written at once (one round trip):

  - C{AUTH <password>} when a password is set;
  - C{SELECT <db>} when the database is not 0 (every connection starts in 0);
  - C{CLIENT SETNAME <name>}, so that operators see in C{CLIENT LIST} which
    process and role each connection belongs to (L{client_name}:
    C{privydrop:<node>:store}, C{...:publish}, C{...:subscribe});
  - C{ROLE}, when the server must be the master (its address came from
    Sentinel, L{privydrop.redis.sentinel}): a server that answers anything
    but C{master} (a replica, during or after a failover) is not used
    (L{Handshake.wrong_role}); the connection is dropped and retried, which
    asks the Sentinels again.

A refusal of C{AUTH} or C{SELECT}, or a credentials error (C{NOAUTH},
C{WRONGPASS}) on any step, is a configuration problem: the connection is
dropped, retried with back-off, and reported. A refusal of C{CLIENT SETNAME}
for another reason (a server where C{CLIENT} is renamed away or forbidden by
an ACL) only costs the name: it is logged and the connection is used. The
same goes for C{ROLE} (in the C{@admin} ACL category): refused, the role is
not checked and a replica shows itself by refusing writes (C{-READONLY},
which L{privydrop.redis.protocol} also answers by reconnecting).

This module is pure: it builds the commands and judges the replies. The
protocol (L{privydrop.redis.protocol}) sends them, and the blocking start-up
probe (L{privydrop.redis.probe}) sends the same ones.
"""

from __future__ import annotations

from typing import Any

import attrs

from privydrop.redis.errors import HandshakeRefused

#: Words in the error replies Redis gives when it refuses our credentials
#: (WRONGPASS, NOAUTH, "AUTH <password> called without any password
#: configured", "invalid password" of older servers).
_AUTH_ERROR_MARKERS = ("WRONGPASS", "NOAUTH", "AUTH", "password")

#: Every connection name starts with this, so C{CLIENT LIST} tells ours apart.
NAME_PREFIX = "privydrop"


def is_auth_error(message: str) -> bool:
    """Whether an error reply of Redis is about credentials."""
    return any(marker in message for marker in _AUTH_ERROR_MARKERS)


def check_client_name(name: str) -> str:
    """C{name}, when Redis accepts it as a connection name.

    Redis refuses names with spaces, newlines or characters outside printable
    ASCII; checking here turns such a name into an error at start-up rather
    than a refused handshake on every connection.

    @raise ValueError: the name is empty or has such a character.
    """
    if not name or any(not "!" <= char <= "~" for char in name):
        raise ValueError(
            f"a Redis connection name must be printable ASCII without spaces: {name!r}"
        )
    return name


def client_name(role: str, node_id: str | None = None) -> str:
    """The connection name of one role of this process: C{privydrop:<node>:<role>}.

    @param role: what the connection is for (C{"store"}, C{"publish"}...).
    @param node_id: this process's id in the cluster; without one the name
        is C{privydrop:<role>}.
    @raise ValueError: see L{check_client_name}.
    """
    parts = (NAME_PREFIX, role) if node_id is None else (NAME_PREFIX, node_id, role)
    return check_client_name(":".join(parts))


@attrs.frozen
class HandshakeStep:
    """One command of the handshake.

    @ivar command: its name, for messages (C{"AUTH"}, C{"CLIENT SETNAME"}).
    @ivar args: the command as sent.
    @ivar required: whether a refusal other than a credentials error drops
        the connection.
    """

    command: str
    args: tuple[Any, ...] = attrs.field(repr=False)
    required: bool = True


#: Asks the server's role; see L{Handshake.wrong_role}.
ROLE_STEP = HandshakeStep("ROLE", ("ROLE",), required=False)


@attrs.frozen
class Handshake:
    """What a connection says first; see the module docstring.

    @ivar password: sent with C{AUTH}; None for a server without one.
    @ivar db: selected when not 0.
    @ivar name: the connection name; None to send none.
    @ivar verify_master: whether to ask C{ROLE} and use only a master.
    """

    password: str | None = attrs.field(default=None, repr=False)
    db: int = 0
    name: str | None = None
    verify_master: bool = False

    def steps(self) -> tuple[HandshakeStep, ...]:
        """The commands to write, in order (maybe none)."""
        steps: list[HandshakeStep] = []
        if self.password is not None:
            steps.append(HandshakeStep("AUTH", ("AUTH", self.password)))
        if self.db:
            steps.append(HandshakeStep("SELECT", ("SELECT", self.db)))
        if self.name is not None:
            steps.append(
                HandshakeStep("CLIENT SETNAME", ("CLIENT", "SETNAME", self.name), required=False)
            )
        if self.verify_master:
            steps.append(ROLE_STEP)
        return tuple(steps)

    @staticmethod
    def wrong_role(step: HandshakeStep, reply: Any) -> str | None:
        """Judge a successful reply to one step: is the server the wrong role?

        @return: the role the server named (C{"slave"}, C{"sentinel"}, or
            C{"unknown"} for a reply that is not C{ROLE}'s) when the step is
            L{ROLE_STEP} and the role is not C{master}; None otherwise.
        """
        if step != ROLE_STEP:
            return None
        role = reply[0] if type(reply) is list and reply else None
        if role == "master":
            return None
        return role if type(role) is str else "unknown"

    @staticmethod
    def refusal(step: HandshakeStep, reply: str) -> HandshakeRefused | None:
        """Judge an error reply to one step.

        @param reply: the server's error reply.
        @return: the refusal to report, or None when the connection can be
            used all the same (an optional step refused for another reason
            than credentials).
        """
        is_auth = is_auth_error(reply)
        if step.required or is_auth:
            return HandshakeRefused(step.command, reply, is_auth)
        return None
