"""The quiet gate of bench/run: how much CPU other processes took while a run was measured.

The development machine is shared, and a test suite running beside the benchmark slows
whichever half of a reference/project pair it lands on, which skews the ratio. bench/run
takes a L{Snapshot} of the benchmark cores and of its own processes (the server under test,
the redis-server it started, itself) before and after each run, adds the load generator's
CPU from its rusage, and L{other_cpu_pct} turns the two snapshots into the share of one
core the rest of the machine used. A pair of runs is only compared (L{pair_verdict}) when
both halves stayed under the quiet threshold.

Everything that reads C{/proc} is a thin wrapper around a pure parser, so the accounting is
tested on written-out snapshots (tests/unit/test_bench_quiet.py).

Standard library only: bench/run must run before the project's environment exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

#: C{/proc/stat} cpu columns counted as process time: user, nice, system, steal. Time in
#: irq and softirq is left out because the loopback network work of the measured processes
#: is accounted there; iowait and idle are not work.
_BUSY_COLUMNS = (0, 1, 2, 7)


def busy_ticks(proc_stat: str, cores: Iterable[str]) -> int:
    """Busy process time of some cores, in clock ticks, from the text of C{/proc/stat}.

    @param proc_stat: the whole text of C{/proc/stat}.
    @param cores: core numbers as strings (C{"0"} for the C{cpu0} line).
    @return: the sum of user, nice, system and steal ticks of those cores.
    @raise ValueError: when a core has no line (the machine has fewer cores).
    """
    wanted = {f"cpu{c}" for c in cores}
    seen = set()
    total = 0
    for line in proc_stat.splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            vals = rest.split()
            total += sum(int(vals[i]) for i in _BUSY_COLUMNS if i < len(vals))
            seen.add(name)
    missing = wanted - seen
    if missing:
        raise ValueError(f"/proc/stat has no line for {', '.join(sorted(missing))}")
    return total


def process_ticks(pid_stat: str) -> int:
    """CPU time of one process (all its threads), in clock ticks, from C{/proc/<pid>/stat}.

    The command name (field 2) may hold spaces and parentheses, so the fields are counted
    from the last C{")"}: utime and stime are fields 14 and 15 of the line.

    @param pid_stat: the text of C{/proc/<pid>/stat}.
    @return: utime + stime.
    @raise ValueError: when the text is not such a line.
    """
    head, sep, rest = pid_stat.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        raise ValueError(f"not a /proc/<pid>/stat line: {pid_stat[:80]!r}")
    # fields[0] is the state (field 3), so utime (14) and stime (15) are fields[11] and [12].
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class Snapshot:
    """What the cores and the benchmark's own processes had used at one moment.

    @ivar at: C{time.monotonic()} when it was taken.
    @ivar busy: L{busy_ticks} of the watched cores.
    @ivar own: L{process_ticks} per benchmark process id; a process that had exited is absent.
    """

    at: float
    busy: int
    own: Mapping[int, int] = field(default_factory=dict)


def other_cpu_pct(before: Snapshot, after: Snapshot, hz: int,
                  extra_own_seconds: float = 0.0) -> float:
    """The share of one core that processes other than the benchmark's used between two snapshots.

    Own time is the growth of each benchmark process present in both snapshots, plus the
    whole time of one that appears only in C{after} (it started in between, so all its time
    falls inside), plus C{extra_own_seconds} (the load generator's time from its rusage once
    it was reaped). A process present only in C{before} exited in between and its last
    ticks cannot be read; callers account for such a process through C{extra_own_seconds}.

    @param hz: clock ticks per second (C{os.sysconf("SC_CLK_TCK")}).
    @return: percent of one core, never negative (tick rounding can make own time exceed
        the cores' busy time by a tick or two).
    @raise ValueError: when C{after} is not later than C{before}.
    """
    wall = after.at - before.at
    if wall <= 0:
        raise ValueError(f"the second snapshot is not later than the first ({wall:.3f} s)")
    own = 0
    for pid, ticks in after.own.items():
        own += ticks - before.own.get(pid, 0)
    busy = (after.busy - before.busy) / hz
    other = busy - own / hz - extra_own_seconds
    return max(0.0, 100.0 * other / wall)


@dataclass(frozen=True)
class Verdict:
    """Whether one repetition (the two halves of a pair, or a single target's run) was quiet.

    @ivar quiet: every half stayed at or under the threshold.
    @ivar reason: for a noisy one, which half and how much (empty when quiet).
    """

    quiet: bool
    reason: str


def pair_verdict(other_pct: Mapping[str, float | None], threshold_pct: float) -> Verdict:
    """Judge a repetition from the other processes' CPU measured during each of its halves.

    A half whose share could not be measured (C{None}: the run failed before the load
    generator ran) does not make the pair noisy; the failed run is reported as an error.

    @param other_pct: L{other_cpu_pct} per target name.
    @param threshold_pct: the quiet threshold, percent of one core.
    """
    loud = {t: p for t, p in other_pct.items() if p is not None and p > threshold_pct}
    if not loud:
        return Verdict(True, "")
    parts = ", ".join(f"{t} {p:.1f} %" for t, p in loud.items())
    return Verdict(False, f"other processes used {parts} of a core (quiet threshold {threshold_pct:g} %)")


def quietest(attempts: list[dict[str, float | None]]) -> int:
    """Index of the attempt whose noisiest half was the least noisy (the one to keep)."""
    def loudness(i: int) -> float:
        return max((p for p in attempts[i].values() if p is not None), default=0.0)
    return min(range(len(attempts)), key=loudness)


# ------------------------------------------------------------------ reading /proc


def take(cores: Iterable[str], pids: Iterable[int], clock: float) -> Snapshot:
    """Read C{/proc} now: the cores' busy ticks and each still running process's ticks."""
    own = {}
    for pid in pids:
        try:
            own[pid] = process_ticks(Path(f"/proc/{pid}/stat").read_text())
        except (OSError, ValueError):
            pass  # exited: see other_cpu_pct
    return Snapshot(at=clock, busy=busy_ticks(Path("/proc/stat").read_text(), cores), own=own)


def clock_ticks() -> int:
    """Clock ticks per second of the C{/proc} counters."""
    return os.sysconf("SC_CLK_TCK")
