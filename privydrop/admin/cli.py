"""The C{privydrop-admin} command line (console script of the package).

::

    privydrop-admin [--env-file FILE] [--redis URL] referrers [--from DATE] [--to DATE] [--format csv|json]
    privydrop-admin ... monitor [--interval S] [--once] [--json]
    privydrop-admin ... cleanup [--apply]

Redis is found as the server finds it (L{privydrop.settings.sources}): the
C{.env} file (C{--env-file}, or C{.env.<NODE_ENV>} in the working
directory), the environment (C{REDIS_URL}, or C{REDIS_HOST}/C{REDIS_PORT}/
C{REDIS_PASSWORD}/C{REDIS_DB}), then C{--redis}. This module, like
L{privydrop.tap}, reads the process environment; exit status 0 on success,
1 when the settings or Redis fail, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from privydrop.admin import cleanup, monitor, referrers
from privydrop.admin.client import RedisClient, RedisError
from privydrop.settings import ConfigError, RedisSettings
from privydrop.settings.sources import settings_from_options

#: Shortest refresh interval of C{monitor}, seconds: each refresh SCANs the keyspace.
MIN_INTERVAL_S = 0.5


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date like 2024-06-30, got %r" % (text,)) from None


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError("expected seconds (at least %s), got %r" % (MIN_INTERVAL_S, text))
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="privydrop-admin",
        description="Look after a PrivyDrop deployment's Redis: referrer statistics, "
        "a live view, clean-up. Reads the same settings as the server "
        "(.env file, REDIS_URL or REDIS_HOST...).",
    )
    top.add_argument("--env-file", help="read settings from this .env file (default: "
                     ".env.<NODE_ENV> in the working directory, when present)")
    top.add_argument("--redis", metavar="URL", help="redis://[:password@]host:port/db "
                     "(overrides REDIS_URL)")
    commands = top.add_subparsers(dest="command", required=True)

    export = commands.add_parser("referrers", help="export the daily referrer counts")
    export.add_argument("--from", dest="start", type=_date, metavar="DATE",
                        help="first UTC day (YYYY-MM-DD), included")
    export.add_argument("--to", dest="end", type=_date, metavar="DATE",
                        help="last UTC day (YYYY-MM-DD), included")
    export.add_argument("--format", choices=("csv", "json"), default="csv")

    watch = commands.add_parser("monitor", help="rooms, sockets, rate-limit windows, memory")
    watch.add_argument("--interval", type=_interval, default=2.0, metavar="S",
                       help="seconds between refreshes (default 2)")
    watch.add_argument("--once", action="store_true", help="print one snapshot and exit")
    watch.add_argument("--json", action="store_true", help="one JSON object per snapshot")

    clean = commands.add_parser(
        "cleanup", help="keys without a TTL and room members without a binding (dry run)"
    )
    clean.add_argument("--apply", action="store_true", help="remove what was found")
    return top


def redis_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> RedisSettings:
    """Redis as the server would find it.

    @raise ConfigError: for invalid settings, or when no Redis is configured.
    """
    options = {"env-file": args.env_file, "redis": args.redis}
    settings = settings_from_options(options, environ)
    if settings.redis is None:
        raise ConfigError(
            "no Redis configured: set REDIS_URL or REDIS_HOST (or pass --redis),"
            " or REDIS_SENTINELS and REDIS_SENTINEL_MASTER"
        )
    return settings.redis


def _referrers(client: RedisClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.start and args.end and args.start > args.end:
        raise ConfigError("--from %s is after --to %s" % (args.start, args.end))
    rows = referrers.daily_referrers(client, args.start, args.end)
    out.write(referrers.as_json(rows) if args.format == "json" else referrers.as_csv(rows))
    return 0


def _monitor(client: RedisClient, args: argparse.Namespace, out: TextIO) -> int:
    clear = not args.json and not args.once and out.isatty()
    try:
        while True:
            snapshot = monitor.take_snapshot(client)
            if args.json:
                out.write(json.dumps(snapshot.as_json(), ensure_ascii=False) + "\n")
            else:
                if clear:
                    out.write("\x1b[H\x1b[2J")
                out.write(monitor.render(snapshot, client.address))
            out.flush()
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _cleanup(client: RedisClient, args: argparse.Namespace, out: TextIO) -> int:
    findings = cleanup.find(client)
    for name in findings.keys_without_ttl:
        out.write("key without TTL: %s\n" % (name,))
    for member in findings.stale_members:
        out.write("member without binding: %s %s\n" % (member.set_key, member.socket_id))
    if findings.empty:
        out.write("nothing to clean up\n")
        return 0
    if not args.apply:
        out.write("dry run: %d keys, %d members; run with --apply to remove them\n" % (
            len(findings.keys_without_ttl), len(findings.stale_members)))
        return 0
    deleted, removed = cleanup.apply(client, findings)
    out.write("removed %d keys, %d members\n" % (deleted, removed))
    return 0


_COMMANDS = {"referrers": _referrers, "monitor": _monitor, "cleanup": _cleanup}


def run(
    argv: Sequence[str], environ: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """The command, with its inputs and outputs given (what the tests call).

    @return: the exit status.
    """
    args = parser().parse_args(argv)
    try:
        settings = redis_settings(args, environ)
        with RedisClient(settings) as client:
            return _COMMANDS[args.command](client, args, out)
    except (ConfigError, RedisError) as e:
        err.write("privydrop-admin: %s\n" % (e,))
        return 1


def main() -> int:
    """Console-script entry point: C{sys.argv}, C{os.environ}, standard streams."""
    return run(sys.argv[1:], os.environ, sys.stdout, sys.stderr)
