'use strict';
// Measurement helpers: percentiles, a growable sample buffer, and the server's
// CPU time and RSS read from /proc (Linux only).

const fs = require('fs');
const { execFileSync } = require('child_process');

let clkTck = 100;
try {
  clkTck = parseInt(execFileSync('getconf', ['CLK_TCK']).toString().trim(), 10) || 100;
} catch (e) { /* keep the usual Linux value */ }

// utime + stime of the whole process (all threads), in seconds; null without a pid.
function procCpuSeconds(pid) {
  if (!pid) return null;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) may contain spaces; everything after the last ')' is space-separated.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  return (parseInt(rest[11], 10) + parseInt(rest[12], 10)) / clkTck;
}

// VmRSS in KiB; null without a pid.
function procRssKiB(pid) {
  if (!pid) return null;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return m ? parseInt(m[1], 10) : null;
}

class Samples {
  constructor(initial = 1 << 16) {
    this.buf = new Float64Array(initial);
    this.n = 0;
  }
  push(v) {
    if (this.n === this.buf.length) {
      const b = new Float64Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    this.buf[this.n++] = v;
  }
  // {p50, p90, p99, max, mean} in the unit pushed (ms here), rounded to µs.
  summary() {
    if (this.n === 0) return { p50: null, p90: null, p99: null, max: null, mean: null };
    const a = this.buf.slice(0, this.n).sort();
    const q = (p) => a[Math.min(a.length - 1, Math.max(0, Math.ceil(p * a.length) - 1))];
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += a[i];
    const r = (v) => Math.round(v * 1000) / 1000;
    return { p50: r(q(0.5)), p90: r(q(0.9)), p99: r(q(0.99)), max: r(a[a.length - 1]), mean: r(sum / a.length) };
  }
}

// CPU use of this process (the load generator) over a window, as a fraction of one core.
function selfCpuMeter() {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  return () => {
    const c = process.cpuUsage(c0);
    const dt = Number(process.hrtime.bigint() - t0) / 1e3;
    return dt > 0 ? (c.user + c.system) / dt : 0;
  };
}

module.exports = { procCpuSeconds, procRssKiB, Samples, selfCpuMeter, clkTck };
