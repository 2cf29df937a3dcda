"""Referrer statistics over the store; no I/O of its own."""

from privydrop.tracking.referrers import (
    InvalidTrack,
    ReferrerTracker,
    parse_timestamp_ms,
    utc_day,
    validate_ref,
)

__all__ = ["InvalidTrack", "ReferrerTracker", "parse_timestamp_ms", "utc_day", "validate_ref"]
