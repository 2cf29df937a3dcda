"""The listener's endpoint string, with the configured listen backlog.

Twisted listens with a backlog of 50 unless the endpoint string says
C{backlog=}. A burst of connections beyond it waits in the kernel (or has its
SYN dropped and retried), where no deadline of the server reaches it: with
300 connections opened at once and never used, dozens stayed open long after
C{HTTP_HEADER_TIMEOUT}. L{with_backlog} adds C{LISTEN_BACKLOG} to the endpoint
types that take one, unless the operator's string names its own; a
socket-activated listener (C{systemd:}) was created by systemd with the
backlog of its C{.socket} unit and is left as it is.
"""

from __future__ import annotations

#: Endpoint types whose server string takes C{backlog=}.
BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl"})


def _arguments(text: str) -> list[str]:
    """The arguments of an endpoint string after its type, split at the
    colons that are not escaped with a backslash (escapes kept)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def with_backlog(description: str, backlog: int) -> str:
    """C{description} with C{:backlog=<backlog>} added where it applies.

    @param description: a Twisted server endpoint string (C{--listen}).
    @param backlog: the listen backlog to use when the string sets none.
    @return: the string to listen with.
    """
    kind, colon, rest = description.partition(":")
    if not colon or kind.strip().lower() not in BACKLOG_TYPES:
        return description
    for argument in _arguments(rest):
        if argument.partition("=")[0].strip() == "backlog":
            return description
    return "%s:backlog=%d" % (description.rstrip(":"), backlog)
