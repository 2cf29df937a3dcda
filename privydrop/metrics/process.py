"""The usual C{process_*} figures, readable inside the systemd sandbox.

prometheus_client's C{ProcessCollector} reads the boot time from
C{/proc/stat} first and exposes nothing when it cannot; the units in
C{systemd/} run the server with C{ProcSubset=pid}, which hides that file,
so it would stay silent exactly in production. L{ProcessFigures} exposes
the same names from what the process may always read about itself:
C{getrusage} and C{getrlimit}, C{/proc/self/statm} and C{/proc/self/fd}
(a figure whose source is missing, as on a system without C{/proc}, is
left out). C{process_start_time_seconds} is when the figures were set up,
which the service tree does at start-up.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

_PAGE_SIZE = resource.getpagesize()


class ProcessFigures:
    """A collector of this process's CPU time, memory and file descriptors."""

    def __init__(self, proc_self: str = "/proc/self", started: float | None = None) -> None:
        """
        @param proc_self: this process's directory in procfs.
        @param started: when the process started, POSIX seconds; now when
            None (the metrics are built at start-up).
        """
        self._proc_self = proc_self
        self._started = time.time() if started is None else started

    def collect(self) -> Iterator[Metric]:
        """Read the figures now."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            value=usage.ru_utime + usage.ru_stime,
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=self._started,
        )
        virtual, resident = self._statm()
        if virtual is not None and resident is not None:
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=virtual
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes", "Resident memory size in bytes.", value=resident
            )
        open_fds = self._open_fds()
        if open_fds is not None:
            yield GaugeMetricFamily(
                "process_open_fds", "Number of open file descriptors.", value=open_fds
            )
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )

    def _statm(self) -> tuple[float | None, float | None]:
        try:
            with open(os.path.join(self._proc_self, "statm"), "rb") as statm:
                size, resident = statm.read().split()[:2]
        except (OSError, ValueError):
            return None, None
        return float(int(size) * _PAGE_SIZE), float(int(resident) * _PAGE_SIZE)

    def _open_fds(self) -> int | None:
        try:
            return len(os.listdir(os.path.join(self._proc_self, "fd")))
        except OSError:
            return None
