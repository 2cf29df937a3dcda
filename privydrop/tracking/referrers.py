"""Referrer statistics (C{POST /api/set_track}): counts per referrer per UTC day.

Validates what the client sent, works out the UTC day of its timestamp and
hands one atomic increment to the store (C{referrers:daily:<YYYY-MM-DD>}, see
L{privydrop.store.keys}). The number of distinct referrers per day is capped
so a client inventing names cannot grow the hash without bound. No I/O of its
own beyond calling the store; nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime
import math

from twisted.logger import Logger

from privydrop.settings import TrackingSettings
from privydrop.store import keys
from privydrop.store.interface import IStore

_log = Logger()

#: Timestamps accepted, ms since the epoch: 2000-01-01 up to (not including)
#: 2100-01-01 UTC. Anything outside is a broken client clock or garbage.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000

_MS_PER_DAY = 86_400_000
_EPOCH = datetime.date(1970, 1, 1)


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


def utc_day(timestamp_ms: object) -> str:
    """The UTC date (C{YYYY-MM-DD}) of a timestamp in ms since the epoch.

    @raise InvalidTrack: unless it is a finite number (not a boolean) between
        L{MIN_TIMESTAMP_MS} and L{MAX_TIMESTAMP_MS}.
    """
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, (int, float)):
        raise InvalidTrack("timestamp must be a number of milliseconds")
    if isinstance(timestamp_ms, float) and not math.isfinite(timestamp_ms):
        raise InvalidTrack("timestamp must be finite")
    if not MIN_TIMESTAMP_MS <= timestamp_ms < MAX_TIMESTAMP_MS:
        raise InvalidTrack("timestamp is out of range")
    days = math.floor(timestamp_ms) // _MS_PER_DAY
    return (_EPOCH + datetime.timedelta(days=days)).isoformat()


class ReferrerTracker:
    """Counts referrals per UTC day in the store."""

    def __init__(self, store: IStore, settings: TrackingSettings) -> None:
        """
        @param store: where the counts live.
        @param settings: TTL of a day's counts, longest name, cap per day.
        """
        self._store = store
        self._settings = settings

    async def track(self, ref: object, timestamp_ms: object) -> bool:
        """Count one referral. One store round trip.

        @param ref: the referrer name the client sent.
        @param timestamp_ms: the client's time of the visit.
        @return: True when counted; False when the day already holds the
            maximum number of distinct referrers and this is a new one.
        @raise InvalidTrack: when C{ref} or C{timestamp_ms} is unusable.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        settings = self._settings
        valid_ref = validate_ref(ref, settings.max_ref_length)
        day = utc_day(timestamp_ms)
        counted = await self._store.track_referrer(
            day, valid_ref, settings.ttl_s, settings.max_referrers_per_day
        )
        if not counted:
            _log.warn(
                "referrer not counted: {day} already has {limit} distinct referrers",
                day=day,
                limit=settings.max_referrers_per_day,
            )
        return counted
