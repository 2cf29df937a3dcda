"""Referrer statistics (C{POST /api/set_track}): counts per referrer per UTC day.

Validates what the client sent and hands one atomic increment to the store
(C{referrers:daily:<YYYY-MM-DD>}, see L{privydrop.store.keys}).

The visit counts on the server's UTC day. The client's C{timestamp} must be a
time (the PrivyDrop frontend sends C{new Date().toISOString()}; epoch
milliseconds as a number or numeric string are accepted too, as the Node
backend's C{new Date(timestamp)} would read them), but it does not choose
the day: otherwise one client could write a hash for every day from 2000 to
2100, each up to the referrer cap. The number of distinct referrers per day
is capped so a client inventing names cannot grow the hash without bound.
No I/O of its own beyond calling the store; nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re

from twisted.internet.interfaces import IReactorTime

from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import TrackingSettings
from privydrop.store import keys
from privydrop.store.interface import IStore

_log = Logger()

#: The largest distance from the epoch a JavaScript Date can hold, ms.
MAX_DATE_MS = 8.64e15

#: Epoch milliseconds written as text: an optional sign, digits, decimals.
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d+)?")
_MS_PER_DAY = 86_400_000
_EPOCH = datetime.date(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class InvalidTrack(ValueError):
    """The referrer or timestamp sent to C{set_track} cannot be used.

    The message is safe to return to the client.
    """


def validate_ref(ref: object, max_length: int) -> str:
    """Check a referrer name.

    @raise InvalidTrack: unless it is a non-empty string of at most
        C{max_length} characters without control characters.
    """
    if not isinstance(ref, str):
        raise InvalidTrack("ref must be a string")
    if not ref:
        raise InvalidTrack("ref is required")
    if len(ref) > max_length:
        raise InvalidTrack(f"ref is longer than {max_length} characters")
    if keys.contains_control_characters(ref):
        raise InvalidTrack("ref must not contain control characters")
    return ref


def parse_timestamp_ms(timestamp: object) -> float:
    """Read a client's timestamp as C{new Date(timestamp)} would, in ms since the epoch.

    Accepted: a finite number of milliseconds (not a boolean); the same
    written as a decimal string; an ISO 8601 date or date-time (C{Z}, an
    offset, or none, which is read as UTC); an RFC 2822 date such as
    C{Date.toUTCString()} writes. The result lies within a JavaScript Date's
    range.

    @raise InvalidTrack: for anything that is not a time.
    """
    if isinstance(timestamp, bool):
        raise InvalidTrack("timestamp is not a time")
    if isinstance(timestamp, (int, float)):
        value = float(timestamp)
    elif isinstance(timestamp, str):
        value = _parse_text(timestamp.strip())
    else:
        raise InvalidTrack("timestamp is not a time")
    if not math.isfinite(value) or abs(value) > MAX_DATE_MS:
        raise InvalidTrack("timestamp is not a time")
    return int(value) if value.is_integer() else value


def _parse_text(text: str) -> float:
    if not text:
        raise InvalidTrack("timestamp is not a time")
    if _NUMERIC.fullmatch(text):
        return float(text)
    moment: datetime.datetime | None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            moment = None
    if moment is None:
        raise InvalidTrack("timestamp is not a time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _EPOCH_UTC).total_seconds() * 1000


def utc_day(timestamp_ms: float) -> str:
    """The UTC date (C{YYYY-MM-DD}) of a time in ms since the epoch."""
    days = math.floor(timestamp_ms) // _MS_PER_DAY
    return (_EPOCH + datetime.timedelta(days=days)).isoformat()


class ReferrerTracker:
    """Counts referrals per UTC day in the store."""

    def __init__(self, store: IStore, settings: TrackingSettings, clock: IReactorTime) -> None:
        """
        @param store: where the counts live.
        @param settings: TTL of a day's counts, longest name, cap per day.
        @param clock: the server's time, which decides the day counted.
        """
        self._store = store
        self._settings = settings
        self._clock = clock
        self._warnings = WarningThrottle(clock)

    async def track(self, ref: object, timestamp: object) -> bool:
        """Count one referral on the server's UTC day. One store round trip.

        @param ref: the referrer name the client sent.
        @param timestamp: the client's time of the visit; it must be a time
            (L{parse_timestamp_ms}) but does not choose the day.
        @return: True when counted; False when the day already holds the
            maximum number of distinct referrers and this is a new one.
        @raise InvalidTrack: when C{ref} or C{timestamp} is unusable.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        settings = self._settings
        valid_ref = validate_ref(ref, settings.max_ref_length)
        parse_timestamp_ms(timestamp)
        day = utc_day(self._clock.seconds() * 1000)
        counted = await self._store.track_referrer(
            day, valid_ref, settings.ttl_s, settings.max_referrers_per_day
        )
        if not counted:
            self._warnings.warn(
                _log,
                "day-full",
                "referrer not counted: {day} already has {limit} distinct referrers",
                day=day,
                limit=settings.max_referrers_per_day,
            )
        return counted
