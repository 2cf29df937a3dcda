"""The twistd plugin's options and service maker: C{twistd privydrop}.

L{Options} only parses the command line; L{makeService} turns options, the
process environment and the C{.env} file into validated
L{privydrop.settings.Settings} and builds the service tree. This is the one
module (with the plugin file) that reads C{os.environ}.

Start-up failures that an operator must fix (an invalid value, production
without Redis, production with Redis unreachable or refusing the password)
are reported on stderr and as one critical log event, and exit non-zero
before anything listens: twistd has not started logging yet when
L{makeService} runs, so stderr is the only place a message is sure to be seen.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.logger import LogLevel
from twisted.python import usage

from privydrop import __version__
from privydrop.compat import twisted as twisted_compat
from privydrop.logs import levels as loglevels
from privydrop.logs.levels import Logger
from privydrop.redis.probe import RedisProbeError, probe_redis
from privydrop.settings import ConfigError, Settings
from privydrop.settings.sources import VARIABLES, settings_from_options

_log = Logger()
_LEVELS = frozenset(LogLevel.iterconstants())
_RANK = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}


def _help(variable: Any) -> str:
    env = " [env %s]" % (variable.env,) if variable.env else ""
    return "%s (default: %s)%s" % (variable.help, variable.default, env)


class Options(usage.Options):
    """Command-line options of C{twistd privydrop}; each overrides its variable."""

    synopsis = "[options]"
    longdesc = (
        "PrivyDrop signaling backend: REST API and Socket.IO signaling. "
        "Settings come from, in rising precedence: defaults, a .env file, "
        "the environment, these options."
    )
    optParameters = [
        [v.option, None, None, _help(v)] for v in VARIABLES if v.option and not v.flag
    ]
    optFlags = [[v.option, None, _help(v)] for v in VARIABLES if v.option and v.flag]

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        print("privydrop-signaling %s" % (__version__,))
        sys.exit(0)


def _fatal(message: str) -> NoReturn:
    _log.critical("cannot start: {error}", error=message)
    sys.stderr.write("privydrop: cannot start: %s\n" % (message,))
    sys.stderr.flush()
    raise SystemExit(1)


def settings_for(options: Any, environ: Any = None) -> Settings:
    """Settings from options and the environment, or exit with a message.

    @raise SystemExit: (code 1) when a value is invalid or production has no
        Redis configured.
    """
    try:
        settings = settings_from_options(options, os.environ if environ is None else environ)
    except ConfigError as e:
        _fatal("invalid configuration: %s" % (e,))
    if settings.production and settings.redis is None:
        _fatal(
            "NODE_ENV=production needs Redis: set REDIS_HOST (and REDIS_PORT, "
            "REDIS_PASSWORD) or REDIS_URL (or --redis), or REDIS_SENTINELS and "
            "REDIS_SENTINEL_MASTER. The in-memory store is for development only."
        )
    return settings


def _twist_log_level(options: Any) -> LogLevel | None:
    """The level C{twist --log-level} filters at (C{twist}'s options are the
    parent of ours), or C{None} when not run by C{twist} (C{twistd} has no
    such filter; then every event is emitted)."""
    parent = getattr(options, "parent", None)
    try:
        level = parent["logLevel"] if parent is not None else None
    except (KeyError, TypeError):
        return None
    return level if level in _LEVELS else None


def recorded_level(settings: Settings, twist_level: LogLevel | None) -> LogLevel:
    """The lowest level of the package's events that is recorded.

    C{LOG_LEVEL} when given; otherwise C{twist --log-level} when run by
    C{twist}; otherwise C{info}. Under C{twist}, events below its own level
    are dropped anyway, so the higher of the two is the one that holds.
    """
    if settings.log_level is None:
        return twist_level if twist_level is not None else loglevels.DEFAULT_LEVEL
    level = loglevels.level_named(settings.log_level)
    if twist_level is not None and _RANK[twist_level] > _RANK[level]:
        return twist_level
    return level


#: Allocations (net of frees) between young-generation collections; CPython's
#: default is 700. See L{tune_garbage_collector}.
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Make the cycle collector cheaper for a long-running server.

    Every connection allocates many short-lived container objects (Deferreds,
    requests, protocol state), so with CPython's defaults the young
    generation is collected very often under load. Everything alive at
    start-up (modules, classes, settings) is moved out of the collector's
    view (C{gc.freeze}), and the young generation is collected every 10,000
    net allocations instead of 700 (older generations every 20 younger
    collections instead of 10); C{docs/performance.md} has the measurements.
    Cyclic garbage is still collected, only a little later; nothing relies
    on when.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def makeService(options: Any) -> IService:
    """Build the service tree for C{twistd privydrop}.

    In production Redis is contacted once, synchronously, before the reactor
    runs: when it cannot be reached or rejects the password the process exits
    non-zero without listening. In development a failed check is logged and
    the server starts anyway (the store reconnects by itself).
    """
    from twisted.internet import reactor

    from privydrop.service import build_service

    settings = settings_for(options)
    loglevels.set_minimum(recorded_level(settings, _twist_log_level(options)))
    if settings.redis is not None:
        try:
            probe_redis(settings.redis)
        except RedisProbeError as e:
            if settings.production:
                _fatal(str(e))
            _log.error("Redis check failed, continuing in development: {error}", error=str(e))
            sys.stderr.write("privydrop: warning: %s\n" % (e,))
    tune_garbage_collector()
    # No log context per ready connection and reactor turn (see there).
    twisted_compat.lean_dispatch(reactor)
    try:
        return build_service(settings, reactor)
    except ConfigError as e:
        _fatal("invalid configuration: %s" % (e,))
