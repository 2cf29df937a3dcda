"""The quiet gate's accounting (bench/quiet.py), over written-out /proc snapshots."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "quiet.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quiet", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quiet = _load()

# user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """\
cpu  900 10 300 5000 20 0 70 5 0 0
cpu0 400 5 100 2500 10 0 50 3 0 0
cpu1 500 5 200 2500 10 0 20 2 0 0
cpu2 7 7 7 7 7 7 7 7 0 0
intr 12345 0 0
ctxt 999
"""


def _pid_stat(pid: int, comm: str, utime: int, stime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    return f"{pid} ({comm}) S 1 1 1 0 -1 4194560 100 0 0 0 {utime} {stime} 3 4 20 0 1 0 123 4567 89\n"


def test_busy_ticks_counts_user_nice_system_steal_of_the_chosen_cores() -> None:
    assert quiet.busy_ticks(PROC_STAT, ["0"]) == 400 + 5 + 100 + 3
    assert quiet.busy_ticks(PROC_STAT, ["0", "1"]) == 508 + 500 + 5 + 200 + 2


def test_busy_ticks_leaves_out_idle_iowait_irq_and_softirq() -> None:
    more_idle = PROC_STAT.replace("cpu1 500 5 200 2500 10 0 20 2", "cpu1 500 5 200 9999 99 40 80 2")
    assert quiet.busy_ticks(more_idle, ["1"]) == quiet.busy_ticks(PROC_STAT, ["1"])


def test_busy_ticks_refuses_a_core_the_machine_does_not_have() -> None:
    with pytest.raises(ValueError, match="cpu7"):
        quiet.busy_ticks(PROC_STAT, ["0", "7"])


def test_process_ticks_is_utime_plus_stime() -> None:
    assert quiet.process_ticks(_pid_stat(42, "node", 150, 30)) == 180


def test_process_ticks_reads_past_a_command_name_with_spaces_and_parentheses() -> None:
    assert quiet.process_ticks(_pid_stat(42, "we ird) (name", 7, 5)) == 12


def test_process_ticks_refuses_other_text() -> None:
    with pytest.raises(ValueError):
        quiet.process_ticks("not a stat line")


def test_process_ticks_reads_this_process() -> None:
    assert quiet.process_ticks(Path(f"/proc/{os.getpid()}/stat").read_text()) >= 0


def _snap(at: float, busy: int, **own: int) -> object:
    return quiet.Snapshot(at=at, busy=busy, own={int(k[1:]): v for k, v in own.items()})


def test_other_cpu_is_the_cores_busy_time_minus_the_benchmarks_own() -> None:
    # 10 s; the cores were busy 1200 ticks (12 s at 100 Hz); server 800, redis 50, self 10
    # ticks, load generator 2.9 s from its rusage: others 12 - 8.6 - 2.9 = 0.5 s = 5 % of a core.
    before = _snap(100.0, 10_000, p1=1000, p2=500, p3=5)
    after = _snap(110.0, 11_200, p1=1800, p2=550, p3=15)
    assert quiet.other_cpu_pct(before, after, 100, extra_own_seconds=2.9) == pytest.approx(5.0)


def test_other_cpu_counts_all_of_a_process_that_started_in_between() -> None:
    before = _snap(0.0, 0, p1=100)
    after = _snap(2.0, 300, p1=200, p9=150)  # p9 started after the first snapshot
    assert quiet.other_cpu_pct(before, after, 100) == pytest.approx(100 * (3.0 - 1.0 - 1.5) / 2)


def test_other_cpu_without_the_benchmark_is_all_the_busy_time() -> None:
    assert quiet.other_cpu_pct(_snap(0.0, 0), _snap(4.0, 100), 100) == pytest.approx(25.0)


def test_other_cpu_is_never_negative() -> None:
    # tick rounding: own time one tick above the cores' busy time
    assert quiet.other_cpu_pct(_snap(0.0, 0, p1=0), _snap(1.0, 99, p1=100), 100) == 0.0


def test_other_cpu_refuses_snapshots_out_of_order() -> None:
    with pytest.raises(ValueError):
        quiet.other_cpu_pct(_snap(5.0, 0), _snap(5.0, 10), 100)


def test_take_reads_proc_for_this_process_and_skips_one_that_is_gone() -> None:
    snap = quiet.take(["0"], [os.getpid(), 2**22 + 12345], 1.0)
    assert set(snap.own) == {os.getpid()}
    assert snap.busy > 0


def test_a_pair_is_quiet_when_both_halves_stay_under_the_threshold() -> None:
    verdict = quiet.pair_verdict({"reference": 4.9, "project": 5.0}, 5.0)
    assert verdict.quiet and verdict.reason == ""


def test_a_pair_is_noisy_when_either_half_is_over_and_says_which() -> None:
    verdict = quiet.pair_verdict({"reference": 0.0, "project": 12.25}, 5.0)
    assert not verdict.quiet
    assert "project 12.2 %" in verdict.reason and "reference" not in verdict.reason
    assert "threshold 5 %" in verdict.reason


def test_a_failed_half_does_not_make_the_pair_noisy() -> None:
    assert quiet.pair_verdict({"reference": None, "project": 1.0}, 5.0).quiet


def test_the_quietest_attempt_is_the_one_with_the_least_noisy_half() -> None:
    attempts = [{"reference": 30.0, "project": 1.0},
                {"reference": 9.0, "project": 8.0},
                {"reference": 2.0, "project": 20.0}]
    assert quiet.quietest(attempts) == 1


def _load_run() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_run", str(_PATH.parent / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    loader.exec_module(module)
    return module


def _runs(point: str, metrics: dict[str, float]) -> list[dict]:
    return [{"target": t, "point": point, "rep": 1, "data": dict(metrics)}
            for t in ("reference", "project")]


def test_the_report_refuses_the_ratios_of_a_point_that_stayed_noisy() -> None:
    run = _load_run()
    relay = run.relay_point("relay_50x4", 50, 4)
    results = _runs("relay_50x4", {"msgs_per_s": 100.0, "server_cpu_us_per_msg": 10.0})
    gate = {"relay_50x4": ["repetition 1 stayed noisy in 3 attempt(s); the quietest: x"]}
    summary, table = run.report([relay], results, ["reference", "project"], gate)
    assert summary["relay_50x4"]["ratios"]["msgs_per_s"] is None
    assert summary["relay_50x4"]["ratios_refused"] == gate["relay_50x4"]
    assert "noisy" in table and "repetition 1 stayed noisy" in table
    quiet_summary, _ = run.report([relay], results, ["reference", "project"], {})
    assert quiet_summary["relay_50x4"]["ratios"]["msgs_per_s"] == 1.0


def test_a_noisy_conns_point_keeps_its_memory_ratio() -> None:
    run = _load_run()
    conns = next(p for p in run.build_points(_Opts()) if p["name"] == "conns")
    results = _runs("conns", {"alive_verified": 10, "rss_per_conn_kib": 8.0, "setup_s": 2.0})
    results[1]["data"]["rss_per_conn_kib"] = 6.0
    summary, _ = run.report([conns], results, ["reference", "project"], {"conns": ["noisy"]})
    assert summary["conns"]["ratios"]["rss_per_conn_kib"] == 0.75
    assert summary["conns"]["ratios"]["setup_s"] is None


class _Opts:
    conns = 10
    hold = 1.0
    conns_repeat = 1
    sweep = False
    only = None
