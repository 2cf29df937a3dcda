"""Export the daily referrer counts (C{referrers:daily:<YYYY-MM-DD>} hashes).

What the Node backend's export script gives: one row per day and referrer,
as CSV (C{date,referrer,count}) or JSON. Redis keeps each day for 30 days
(L{privydrop.store.keys}), so that is as far back as an export reaches.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Iterable

import attrs

from privydrop.admin.client import RedisClient
from privydrop.store import keys


@attrs.frozen
class ReferrerCount:
    """How often one referrer was counted on one UTC day."""

    day: datetime.date
    referrer: str
    count: int


def daily_referrers(
    client: RedisClient,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
) -> list[ReferrerCount]:
    """Every day's counts between C{start} and C{end} (both included, both optional).

    Days in order, most counted referrer first within a day. Keys whose date
    part is not a date are skipped (they are not this schema's).
    """
    days = []
    for key in client.scan(keys.REFERRERS_PREFIX + "*"):
        try:
            day = datetime.date.fromisoformat(key[len(keys.REFERRERS_PREFIX):])
        except ValueError:
            continue
        if (start is None or day >= start) and (end is None or day <= end):
            days.append(day)
    days.sort()
    replies = client.pipeline([("HGETALL", keys.referrers(day.isoformat())) for day in days])
    rows = []
    for day, reply in zip(days, replies):
        if not isinstance(reply, list):
            continue
        pairs = zip(reply[::2], reply[1::2])
        counted = []
        for referrer, count in pairs:
            try:
                counted.append(ReferrerCount(day, referrer, int(count)))
            except ValueError:
                continue
        counted.sort(key=lambda row: (-row.count, row.referrer))
        rows.extend(counted)
    return rows


def as_csv(rows: Iterable[ReferrerCount]) -> str:
    """C{date,referrer,count} with a header line (RFC 4180 quoting)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "referrer", "count"])
    for row in rows:
        writer.writerow([row.day.isoformat(), row.referrer, row.count])
    return out.getvalue()


def as_json(rows: Iterable[ReferrerCount]) -> str:
    """A JSON list of C{{"date", "referrer", "count"}} objects."""
    return json.dumps(
        [{"date": row.day.isoformat(), "referrer": row.referrer, "count": row.count} for row in rows],
        ensure_ascii=False,
        indent=1,
    ) + "\n"
