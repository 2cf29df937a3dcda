"""Which log levels are recorded, so that hot paths can skip events nobody keeps.

C{twisted.logger} has no cheap "is this level enabled": C{Logger.debug(...)}
builds the whole event (a dict, the time, the source) and hands it to every
observer, and only then does C{twist}'s filtering observer drop it. On a path
run once per connection or per HTTP request that is a measurable share of the
CPU (see C{docs/performance.md}). Code on such paths writes::

    if loglevels.debug:
        _log.debug("...", ...)

The flags say "some observer may want this level". They start true (every
event is emitted, as without this module: tests, C{twistd}, embedding), and
L{privydrop.tap.makeService} lowers them from C{twist --log-level} when it
knows that level. They never hide an event that an observer would record.
"""

from __future__ import annotations

from twisted.logger import LogLevel

_ORDER = list(LogLevel.iterconstants())

#: Whether C{debug} events may be recorded.
debug = True
#: Whether C{info} events may be recorded.
info = True


def set_minimum(level: LogLevel | None) -> None:
    """Record that events below C{level} are dropped (C{None}: unknown, emit all)."""
    global debug, info
    rank = 0 if level is None else _ORDER.index(level)
    debug = rank <= _ORDER.index(LogLevel.debug)
    info = rank <= _ORDER.index(LogLevel.info)
