"""Which log levels are recorded: the package's own filter, and flags for hot paths.

Every module of the package logs through L{Logger}, a C{twisted.logger.Logger}
that drops events below the package's minimum level before building them.
The filter sits at the source because C{twistd} has no C{--log-level}: it
installs its own observer after C{makeService} returns and records whatever
reaches it, so without this C{twistd -n privydrop} (the Docker and systemd
command) would record every debug line. L{privydrop.tap.makeService} sets the
minimum from the C{LOG_LEVEL} setting (default C{info}), or from
C{twist --log-level} when that is given and C{LOG_LEVEL} is not.
Events of Twisted, Autobahn and the other libraries are theirs to filter.

C{twisted.logger} has no cheap "is this level enabled" either:
C{Logger.debug(...)} builds the whole event (a dict, the time, the source)
and hands it to every observer. On a path run once per connection or per
HTTP request that is a measurable share of the CPU (see
C{docs/performance.md}). Code on such paths writes::

    if loglevels.debug:
        _log.debug("...", ...)

The flags say "this level is recorded". Until L{set_minimum} is called
(tests, embedding) everything is emitted, as with a plain C{Logger}.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

from privydrop.logs.client_text import sid_label

_ORDER = list(LogLevel.iterconstants())
_RANK = {level: rank for rank, level in enumerate(_ORDER)}

#: What C{twistd privydrop} records when neither C{LOG_LEVEL} nor
#: C{twist --log-level} says otherwise.
DEFAULT_LEVEL = LogLevel.info

#: Whether C{debug} events may be recorded.
debug = True
#: Whether C{info} events may be recorded.
info = True
#: Events of the package ranked below this are dropped (0: none are).
_minimum_rank = 0


def level_named(name: str) -> LogLevel:
    """The level called C{name} (C{debug}, C{info}, C{warn} or C{warning},
    C{error}, C{critical}; any case).

    @raise ValueError: for any other name.
    """
    key = name.strip().lower()
    if key == "warning":
        key = "warn"
    try:
        return LogLevel.levelWithName(key)
    except Exception:  # noqa: BLE001 - constantly raises ValueError; be sure
        raise ValueError("not a log level: %r" % (name,)) from None


def set_minimum(level: LogLevel | None) -> None:
    """Drop the package's events below C{level} (C{None}: emit every event)."""
    global debug, info, _minimum_rank
    _minimum_rank = 0 if level is None else _RANK[level]
    debug = _minimum_rank <= _RANK[LogLevel.debug]
    info = _minimum_rank <= _RANK[LogLevel.info]


def minimum() -> LogLevel | None:
    """The level set by L{set_minimum} (C{None}: every event is emitted)."""
    return None if _minimum_rank == 0 else _ORDER[_minimum_rank]


class Logger(_TwistedLogger):
    """C{twisted.logger.Logger} that drops events below the package's minimum.

    It also never lets an Engine.IO sid through: an C{engine_sid} field (the
    name every module gives a session's sid) is replaced by the session's
    L{sid_label}, so the lines of one session still go together.

    Use it exactly as C{twisted.logger.Logger} (a module or class attribute);
    C{tests/unit/test_loglevels.py} checks that no module of the package
    creates a plain one.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if _RANK.get(level, _minimum_rank) < _minimum_rank:
            return
        sid = kwargs.get("engine_sid")
        if sid is not None:
            kwargs["engine_sid"] = sid_label(sid)
        super().emit(level, format, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        # Twisted's descriptor builds one of this class; say so to the types.
        return cast(Logger, super().__get__(instance, owner))
