#!/usr/bin/env node
'use strict';
// Load generator for the PrivyDrop signaling server benchmark.
//
//   node loadgen.js <relay|polling|conns|joins|rest> --port N [--pid SERVER_PID] [options]
//
// Each measured point prints one JSON line on stdout and a human summary on stderr.
// Traffic goes to a loopback address only; every phase is bounded in time and count, and a
// watchdog ends the process if anything hangs.

const { performance } = require('perf_hooks');
const framing = require('./lib/framing');
const { WsClient, PollingClient, makeAgent } = require('./lib/client');
const { requestJson } = require('./lib/rest');
const { procCpuSeconds, procRssKiB, Samples, selfCpuMeter } = require('./lib/measure');

const USAGE = `usage: node loadgen.js <scenario> --port N [options]
scenarios:
  relay     P pairs relay ice-candidate with W messages in flight per client (WebSocket)
  polling   the relay scenario over HTTP long-polling clients
  conns     C idle joined connections held for S seconds; alive count, server RSS per connection
  joins     fresh clients connect, join and disconnect (server needs DISABLE_JOIN_RATE_LIMIT=1)
  rest      create_room / check_room / get_room request rate and latency (keep-alive HTTP)
common options:
  --host 127.0.0.1     loopback only
  --port N             server port (required)
  --pid N              server process id, for CPU time and RSS from /proc
  --ports a,b,..       relay / polling: several server processes sharing one Redis; the two
                       clients of pair i connect to ports[2i mod n] and ports[2i+1 mod n], so
                       with n > 1 every relay crosses processes (--port is the first)
  --pids a,b,..        their process ids; the relay's server CPU is their sum
  --duration S         measured seconds (default 5)
  --warmup S           unmeasured seconds before measuring (default 2)
  --label TEXT         copied into the JSON line
  --max-seconds S      watchdog (default 900)
  --max-ops N          cap on messages / joins / requests per loop (default 20000000)
relay / polling:
  --pairs P (default 50)  --window W (default 4)  --setup-concurrency N (default 50)
  --sweep-pairs a,b,..  --sweep-window x,y,..   run every combination, one JSON line each
conns:
  --conns C (default 2000)  --hold S (default 20)  --setup-concurrency N (default 100)
joins:
  --concurrency K (default 32)
rest:
  --concurrency K (default 32)  --get-room-max N (default 2000)`;

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') out.help = true;
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
      else out[a.slice(2)] = argv[++i];
    } else out._.push(a);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const scenario = args._[0];
if (args.help || !scenario) {
  console.error(USAGE);
  process.exit(args.help ? 0 : 2);
}
const num = (k, d) => (args[k] === undefined ? d : Number(args[k]));
const list = (k) => (args[k] === undefined ? null : String(args[k]).split(',').map(Number));

const HOST = args.host || '127.0.0.1';
if (!['127.0.0.1', 'localhost', '::1'].includes(HOST)) {
  console.error('refusing non-loopback host ' + HOST);
  process.exit(2);
}
const PORT = num('port', 0);
if (!PORT) {
  console.error('--port is required');
  process.exit(2);
}
const PID = num('pid', 0) || null;
const PORTS = list('ports') || [PORT];
const PIDS = list('pids') || (PID ? [PID] : []);
// CPU seconds of each server process of the relay (in PIDS order), read once
// per edge of the window; their sum is the relay's server CPU.
const eachServerCpuSeconds = () => PIDS.map((p) => procCpuSeconds(p));
const sumOrNull = (each) => (each.length === 0 ? null : each.reduce((s, c) => s + c, 0));
const DURATION = num('duration', 5);
const WARMUP = num('warmup', 2);
const LABEL = args.label || null;
const MAX_SECONDS = num('max-seconds', 900);
// Hard caps on top of the time limits: no loop sends more than this many messages/requests.
const MAX_OPS = num('max-ops', 20000000);

const watchdog = setTimeout(() => {
  emitResult({ scenario, error: `watchdog: still running after ${MAX_SECONDS}s` }, 'watchdog fired');
  process.exit(3);
}, MAX_SECONDS * 1000);
watchdog.unref();

// ---------------------------------------------------------------- helpers
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (v, d = 1) => (v === null || v === undefined || !isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d);
const restAgent = makeAgent(256);
const runTag = Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);

function emitResult(obj, summary) {
  const line = Object.assign({ scenario, label: LABEL, target_port: PORT, server_pid: PID }, obj);
  process.stdout.write(JSON.stringify(line) + '\n');
  if (summary) process.stderr.write(summary + '\n');
}

// Run fn(i) for i in [0, n) with at most `limit` in flight. Rejects with the first error.
async function pool(n, limit, fn) {
  let next = 0;
  let failed = null;
  const worker = async () => {
    while (failed === null && next < n) {
      const i = next++;
      try {
        await fn(i);
      } catch (e) {
        if (failed === null) failed = e;
      }
    }
  };
  const ws = [];
  for (let k = 0; k < Math.min(limit, n); k++) ws.push(worker());
  await Promise.all(ws);
  if (failed !== null) throw failed;
}

// Event dispatch used during setup: parsed events are queued per name, and waiters take them.
function attachInbox(c) {
  c.inbox = new Map();
  c.waiters = new Map();
  c.onEvent = (p) => {
    let ev;
    try {
      ev = framing.decodeEvent(p);
    } catch (e) {
      return;
    }
    const ws = c.waiters.get(ev.name);
    if (ws && ws.length > 0) {
      ws.shift()(ev.args[0]);
      return;
    }
    let q = c.inbox.get(ev.name);
    if (!q) c.inbox.set(ev.name, (q = []));
    q.push(ev.args[0]);
  };
}

function waitEvent(c, name, timeoutMs = 10000) {
  const q = c.inbox.get(name);
  if (q && q.length > 0) return Promise.resolve(q.shift());
  return new Promise((resolve, reject) => {
    let ws = c.waiters.get(name);
    if (!ws) c.waiters.set(name, (ws = []));
    const timer = setTimeout(() => {
      const i = ws.indexOf(done);
      if (i >= 0) ws.splice(i, 1);
      reject(new Error(`timeout waiting for "${name}"`));
    }, timeoutMs);
    const done = (v) => {
      clearTimeout(timer);
      resolve(v);
    };
    ws.push(done);
  });
}

async function createRoom(roomId) {
  const r = await requestJson(restAgent, HOST, PORT, 'POST', '/api/create_room', { roomId });
  if (r.status !== 200 || !r.json || r.json.success !== true) {
    throw new Error(`create_room ${roomId}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  }
}

async function join(c, roomId) {
  c.send(framing.encodeEvent('join', { roomId }));
  const resp = await waitEvent(c, 'joinResponse');
  if (!resp || resp.success !== true) throw new Error('join failed: ' + JSON.stringify(resp));
}

function newClient(transport, agent, port = PORT) {
  return transport === 'polling' ? new PollingClient(HOST, port, agent) : new WsClient(HOST, port);
}

// Short SDP bodies, enough to make offer/answer realistic in size.
const SDP = 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' +
  'a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n' +
  'c=IN IP4 0.0.0.0\r\na=ice-ufrag:Xy7a\r\na=ice-pwd:0b1c2d3e4f5a6b7c8d9e0f1a\r\na=ice-options:trickle\r\n' +
  'a=fingerprint:sha-256 3A:1F:9C:44:0B:7E:21:D5:6A:88:E3:0F:4C:19:B2:7D:55:A0:3E:91:C8:12:6F:D4:0A:BB:73:2E:98:61:05:CF\r\n' +
  'a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n';

// Create a room, join two clients (ready tells the first one the second's id), then
// offer/answer so that each side learned its peer's id from the server's messages.
async function setupPair(i, transport, agent, opts) {
  const roomId = `bench-${runTag}-${i}`;
  await createRoom(roomId);
  const a = newClient(transport, agent, PORTS[(2 * i) % PORTS.length]);
  const b = newClient(transport, agent, PORTS[(2 * i + 1) % PORTS.length]);
  attachInbox(a);
  attachInbox(b);
  try {
    await negotiatePair(a, b, roomId, opts);
  } catch (e) {
    a.close();
    b.close();
    throw e;
  }
  a.peer = b;
  b.peer = a;
  a.roomId = b.roomId = roomId;
  return [a, b];
}

async function negotiatePair(a, b, roomId, opts) {
  await a.connect();
  await join(a, roomId);
  await b.connect();
  await join(b, roomId);
  const ready = await waitEvent(a, 'ready');
  if (ready.peerId !== b.sid) throw new Error(`ready.peerId ${ready.peerId} != ${b.sid}`);
  a.peerId = ready.peerId;
  if (opts.negotiate) {
    a.send(framing.encodeEvent('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: SDP }, from: a.sid }));
    const offer = await waitEvent(b, 'offer');
    b.peerId = offer.peerId;
    b.send(framing.encodeEvent('answer', { peerId: b.peerId, answer: { type: 'answer', sdp: SDP }, from: b.sid }));
    const answer = await waitEvent(a, 'answer');
    if (answer.peerId !== a.peerId || b.peerId !== a.sid) throw new Error('offer/answer ids do not match');
  } else {
    b.peerId = a.sid;
  }
}

async function setupPairs(n, transport, agent, concurrency, opts) {
  const clients = new Array(2 * n);
  await pool(n, concurrency, async (i) => {
    const [a, b] = await setupPair(i, transport, agent, opts);
    clients[2 * i] = a;
    clients[2 * i + 1] = b;
  });
  return clients;
}

async function closeAll(clients) {
  for (const c of clients) if (c) c.close();
  await sleep(300);
  for (const c of clients) if (c && c.terminate) c.terminate();
}

// ---------------------------------------------------------------- relay
// Matched without the following comma so that servers emitting '", ' still match.
const ICE_PREFIX = framing.eventPrefix('ice-candidate').slice(0, -1);
const MARK = '"bench":"';
const MARK_KEY = '"bench"';

// A host-candidate-plus-srflx line of typical size; the sequence number and the send time
// ride in an extra field of the candidate object, which the server forwards untouched.
function candidatePrefix(c, i) {
  const ufrag = (0x1000 + (i % 0xefff)).toString(16);
  const port = 40000 + (i % 20000);
  const cand = `candidate:${1000000000 + i * 7919} 1 udp 1677729535 203.0.113.${(i % 250) + 1} ${port} ` +
    `typ srflx raddr 192.168.${(i >> 8) % 250}.${(i % 250) + 1} rport ${port} generation 0 ufrag ${ufrag} ` +
    'network-id 1 network-cost 10';
  return `42["ice-candidate",{"peerId":${JSON.stringify(c.peerId)},"candidate":{"candidate":${JSON.stringify(cand)},` +
    `"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"${ufrag}",${MARK}`;
}

async function relayPoint(P, W, transport) {
  const agent = transport === 'polling' ? makeAgent() : null;
  const tSetup0 = now();
  let clients;
  try {
    clients = await setupPairs(P, transport, agent, num('setup-concurrency', 50), { negotiate: true });
  } catch (e) {
    return { error: 'setup: ' + e.message, pairs: P, window: W, transport };
  }
  const setupS = (now() - tSetup0) / 1000;

  const st = { sending: true, measuring: false, tStart: 0, tEnd: Infinity, delivered: 0, lat: new Samples() };
  let received = 0;
  let sent = 0;
  let bad = 0;
  let other = 0;
  const check = (p, sender) => {
    try {
      const ev = framing.decodeEvent(p);
      const d = ev.args[0];
      if (ev.name !== 'ice-candidate' || d.peerId !== sender.sid ||
          typeof d.candidate.candidate !== 'string' || !d.candidate.candidate.startsWith('candidate:')) bad++;
    } catch (e) {
      bad++;
    }
  };
  const sendOne = (c) => {
    c.inflight++;
    sent++;
    c.send(c.prefix + (++c.seq) + ':' + now().toFixed(3) + '"},"from":"' + c.sid + '"}]');
  };
  const onEvent = (r, p) => {
    if (!p.startsWith(ICE_PREFIX)) {
      other++;
      return;
    }
    const t = now();
    // "bench":"<seq>:<sent ms>" (tolerates a space after the key's colon)
    const k = p.indexOf('"', p.lastIndexOf(MARK_KEY) + MARK_KEY.length) + 1;
    const colon = p.indexOf(':', k);
    const sentAt = Number(p.slice(colon + 1, p.indexOf('"', colon)));
    const s = r.peer;
    s.inflight--;
    received++;
    if (st.measuring && t >= st.tStart) {
      st.delivered++;
      st.lat.push(t - sentAt);
    }
    if ((received & 1023) === 1) check(p, s);
    if (st.sending && sent < MAX_OPS) sendOne(s);
  };
  clients.forEach((c, i) => {
    c.prefix = candidatePrefix(c, i);
    c.seq = 0;
    c.inflight = 0;
    c.onEvent = (p) => onEvent(c, p);
  });

  for (let k = 0; k < W; k++) for (const c of clients) sendOne(c);
  await sleep(WARMUP * 1000);
  const eachCpu0 = eachServerCpuSeconds();
  const cpu0 = sumOrNull(eachCpu0);
  const self = selfCpuMeter();
  st.tStart = now();
  st.measuring = true;
  await sleep(DURATION * 1000);
  st.measuring = false;
  st.tEnd = now();
  const eachCpu1 = eachServerCpuSeconds();
  const cpu1 = sumOrNull(eachCpu1);
  const selfCpu = self();
  st.sending = false;
  // Drain: everything still in flight should arrive; what does not is counted as lost.
  const drainUntil = now() + 5000;
  const inflight = () => clients.reduce((s, c) => s + c.inflight, 0);
  while (inflight() > 0 && now() < drainUntil) await sleep(20);
  const lost = inflight();
  const alive = clients.filter((c) => c.open).length;
  await closeAll(clients);
  if (agent) agent.destroy();

  const windowS = (st.tEnd - st.tStart) / 1000;
  const cpuS = cpu0 === null ? null : cpu1 - cpu0;
  const lat = st.lat.summary();
  return {
    transport, pairs: P, window: W, clients: clients.length, servers: PORTS.length,
    duration_s: round(windowS, 3), warmup_s: WARMUP, setup_s: round(setupS, 2),
    delivered: st.delivered,
    msgs_per_s: round(st.delivered / windowS, 0),
    latency_ms: lat,
    server_cpu_s: round(cpuS, 3),
    server_cpu_pct: cpuS === null ? null : round((100 * cpuS) / windowS, 1),
    server_cpu_us_per_msg: cpuS === null || st.delivered === 0 ? null : round((cpuS * 1e6) / st.delivered, 2),
    // Per server process: its CPU over the window against every delivered message.
    each_server_cpu_us_per_msg: st.delivered === 0 ? null
      : eachCpu1.map((c, i) => round(((c - eachCpu0[i]) * 1e6) / st.delivered, 2)),
    loadgen_cpu_pct: round(selfCpu * 100, 1),
    sent_total: sent, received_total: received, lost_after_drain: lost,
    bad_payloads: bad, other_events: other, clients_open_at_end: alive,
    error: st.delivered === 0 ? 'no messages delivered' : (bad > 0 ? 'payload check failed' : undefined),
  };
}

function relaySummary(r) {
  if (r.error && !r.msgs_per_s) return `${r.transport} relay ${r.pairs}x${r.window}: ERROR ${r.error}`;
  const l = r.latency_ms;
  return `${r.transport} relay ${r.pairs} pairs x window ${r.window}: ${r.msgs_per_s} msg/s, ` +
    `latency p50 ${l.p50} ms p90 ${l.p90} ms p99 ${l.p99} ms, server ${r.server_cpu_us_per_msg} µs CPU/msg ` +
    `(${r.server_cpu_pct}% of a core), loadgen ${r.loadgen_cpu_pct}% of a core, lost ${r.lost_after_drain}` +
    (r.error ? `, ERROR ${r.error}` : '');
}

async function runRelay(transport) {
  const defPairs = transport === 'polling' ? 25 : 50;
  const pairsList = list('sweep-pairs') || [num('pairs', defPairs)];
  const windowList = list('sweep-window') || [num('window', 4)];
  let failed = false;
  for (const P of pairsList) {
    for (const W of windowList) {
      const r = await relayPoint(P, W, transport);
      if (r.error) failed = true;
      emitResult(r, relaySummary(r));
      await sleep(500);
    }
  }
  return failed ? 1 : 0;
}

// ---------------------------------------------------------------- conns
// Pairs that fail to join are counted and left out; the others are kept.
async function setupPairsTolerant(n, firstIndex, concurrency) {
  const clients = [];
  let failures = 0;
  const errors = {};
  await pool(n, concurrency, async (i) => {
    try {
      const [a, b] = await setupPair(firstIndex + i, 'ws', null, { negotiate: false });
      clients.push(a, b);
    } catch (e) {
      failures++;
      const m = e.message.slice(0, 200);
      errors[m] = (errors[m] || 0) + 1;
    }
  });
  return { clients, failures, errors };
}

async function runConns() {
  const C = num('conns', 2000);
  const hold = num('hold', 20);
  const pairs = Math.floor(C / 2);
  // Warm the server with a tenth of the connections first (code paths compiled, allocator
  // pools created), close them, then take the baseline: what follows is the marginal cost.
  const warmPairs = Math.min(pairs, Math.max(50, Math.floor(pairs / 10)));
  const rssCold = procRssKiB(PID);
  const warm = await setupPairsTolerant(warmPairs, 0, num('setup-concurrency', 100));
  await closeAll(warm.clients);
  await sleep(2000);
  const rss0 = procRssKiB(PID);
  const t0 = now();
  // A pair that fails to join is counted and left out; the others are still held and measured.
  const { clients, failures: setupFailures, errors: setupErrors } =
    await setupPairsTolerant(pairs, warmPairs, num('setup-concurrency', 100));
  const setupS = (now() - t0) / 1000;
  if (clients.length === 0) {
    emitResult({ conns: 0, conns_wanted: 2 * pairs, setup_failures: setupFailures, setup_errors: setupErrors,
      error: 'setup: no pair joined' }, 'conns: ERROR no pair joined: ' + Object.keys(setupErrors)[0]);
    return 1;
  }
  let closedDuringHold = 0;
  const reasons = {};
  for (const c of clients) {
    c.onClosed = (cl, why) => {
      closedDuringHold++;
      reasons[why] = (reasons[why] || 0) + 1;
    };
  }
  await sleep(1000);
  const rss1 = procRssKiB(PID);
  await sleep(Math.max(0, hold * 1000 - 1000));
  const rss2 = procRssKiB(PID);
  const open = clients.filter((c) => c.open).length;

  // Probe: every client sends one ice-candidate to its peer; a client is verified alive when
  // its peer's probe reached it (its peer's send path and its own receive path both work).
  let verified = 0;
  const got = new Set();
  for (const c of clients) {
    c.onEvent = (p) => {
      if (p.startsWith(ICE_PREFIX) && !got.has(c)) {
        got.add(c);
        verified++;
      }
    };
  }
  clients.forEach((c, i) => {
    if (c.open) c.send(candidatePrefix(c, i) + 'probe"},"from":"' + c.sid + '"}]');
  });
  const probeUntil = now() + 10000;
  while (verified < open && now() < probeUntil) await sleep(50);

  const pings = clients.reduce((s, c) => s + c.pings, 0);
  const withPing = clients.filter((c) => c.pings > 0).length;
  await closeAll(clients);
  const perConn = rss0 === null ? null : (rss2 - rss0) / clients.length;
  const r = {
    conns: clients.length, conns_wanted: 2 * pairs, setup_failures: setupFailures, setup_errors: setupErrors,
    hold_s: hold, setup_s: round(setupS, 2), warmup_conns: 2 * warmPairs,
    alive_open: open, alive_verified: verified, closed_during_hold: closedDuringHold, close_reasons: reasons,
    pings_answered: pings, clients_pinged: withPing,
    rss_before_kib: rss0, rss_after_setup_kib: rss1, rss_end_kib: rss2,
    rss_per_conn_kib: round(perConn, 2),
    rss_cold_kib: rssCold,
    rss_per_conn_from_cold_kib: rssCold === null ? null : round((rss2 - rssCold) / clients.length, 2),
    error: verified < 2 * pairs ? `${2 * pairs - verified} of ${2 * pairs} connections not verified alive` +
      (setupFailures ? ` (${setupFailures} pairs failed to join)` : '') : undefined,
  };
  emitResult(r, `conns ${r.conns}/${r.conns_wanted} joined (${setupFailures} pairs failed), held ${hold}s: ${open} open, ${verified} verified by a relay probe, ` +
    `${pings} pings answered; server RSS ${rss0} -> ${rss2} KiB = ${r.rss_per_conn_kib} KiB/conn ` +
    `(${r.rss_per_conn_from_cold_kib} KiB/conn from the cold ${rssCold} KiB; setup ${r.setup_s}s)`);
  return r.error ? 1 : 0;
}

// ---------------------------------------------------------------- joins
async function runJoins() {
  const K = num('concurrency', 32);
  const rooms = [];
  for (let k = 0; k < K; k++) {
    const roomId = `bench-${runTag}-j${k}`;
    await createRoom(roomId);
    rooms.push(roomId);
  }
  const latJoin = new Samples();
  const latTotal = new Samples();
  let total = 0;
  let counted = 0;
  let failures = 0;
  let connectErrors = 0;
  const failMsgs = {};
  const tBegin = now();
  const tStart = tBegin + WARMUP * 1000;
  const tEnd = tStart + DURATION * 1000;
  let cpu0 = null;
  let self = null;
  const startTimer = setTimeout(() => {
    cpu0 = procCpuSeconds(PID);
    self = selfCpuMeter();
  }, WARMUP * 1000);
  let cpu1 = null;
  let selfCpu = null;
  const endTimer = setTimeout(() => {
    cpu1 = procCpuSeconds(PID);
    selfCpu = self ? self() : null;
  }, (WARMUP + DURATION) * 1000);

  const worker = async (k) => {
    while (now() < tEnd && total < MAX_OPS) {
      const c = new WsClient(HOST, PORT);
      attachInbox(c);
      const t0 = now();
      try {
        await c.connect(5000);
      } catch (e) {
        connectErrors++;
        c.terminate();
        await sleep(10);
        continue;
      }
      const t1 = now();
      c.send(framing.encodeEvent('join', { roomId: rooms[k] }));
      let resp = null;
      try {
        resp = await waitEvent(c, 'joinResponse', 5000);
      } catch (e) {
        resp = { success: false, message: e.message };
      }
      const t2 = now();
      total++;
      if (resp && resp.success === true) {
        if (t2 >= tStart && t2 < tEnd) {
          counted++;
          latJoin.push(t2 - t1);
          latTotal.push(t2 - t0);
        }
      } else {
        failures++;
        const m = (resp && resp.message) || 'no response';
        failMsgs[m] = (failMsgs[m] || 0) + 1;
      }
      c.close(); // leave: the server runs its disconnect handler
    }
  };
  const ws = [];
  for (let k = 0; k < K; k++) ws.push(worker(k));
  await Promise.all(ws);
  clearTimeout(startTimer);
  clearTimeout(endTimer);
  if (cpu1 === null) {
    cpu1 = procCpuSeconds(PID);
    selfCpu = self ? self() : null;
  }
  await sleep(500); // let the last disconnects finish on the server
  const cpuS = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0;
  const r = {
    concurrency: K, duration_s: DURATION, warmup_s: WARMUP,
    joins: counted, joins_per_s: round(counted / DURATION, 0),
    join_ms: latJoin.summary(), connect_join_ms: latTotal.summary(),
    joins_total: total, failures, connect_errors: connectErrors, failure_messages: failMsgs,
    rooms_created: K,
    server_cpu_pct: cpuS === null ? null : round((100 * cpuS) / DURATION, 1),
    server_cpu_us_per_join: cpuS === null || counted === 0 ? null : round((cpuS * 1e6) / counted, 1),
    loadgen_cpu_pct: selfCpu === null ? null : round(selfCpu * 100, 1),
    error: counted === 0 ? 'no successful joins' : (failures > 0 ? `${failures} joins failed` : undefined),
  };
  emitResult(r, `joins (connect, join, disconnect; ${K} concurrent): ${r.joins_per_s} joins/s, join p50 ` +
    `${r.join_ms.p50} ms p99 ${r.join_ms.p99} ms, connect+join p99 ${r.connect_join_ms.p99} ms, ` +
    `${r.server_cpu_us_per_join} µs server CPU/join, failures ${failures}, connect errors ${connectErrors}`);
  return r.error ? 1 : 0;
}

// ---------------------------------------------------------------- rest
async function restPhase(name, K, maxCount, makeReq, isOk) {
  const lat = new Samples();
  let done = 0;
  let errors = 0;
  let issued = 0;
  let firstError = null;
  const tWarmEnd = now() + WARMUP * 1000;
  // Warm-up: same requests, not counted (also opens the keep-alive connections).
  const warm = async () => {
    while (now() < tWarmEnd) {
      try { await makeReq(-1); } catch (e) { /* counted below if it persists */ }
    }
  };
  await Promise.all(Array.from({ length: K }, warm));
  const cpu0 = procCpuSeconds(PID);
  const self = selfCpuMeter();
  const t0 = now();
  const tEnd = t0 + DURATION * 1000;
  const worker = async () => {
    while (now() < tEnd && issued < Math.min(maxCount, MAX_OPS)) {
      const i = issued++;
      const s = now();
      try {
        const r = await makeReq(i);
        if (isOk(r)) {
          done++;
          lat.push(now() - s);
        } else {
          errors++;
          if (firstError === null) firstError = `HTTP ${r.status} ${r.text.slice(0, 120)}`;
        }
      } catch (e) {
        errors++;
        if (firstError === null) firstError = e.message;
      }
    }
  };
  await Promise.all(Array.from({ length: K }, worker));
  const elapsed = (now() - t0) / 1000;
  const cpu1 = procCpuSeconds(PID);
  const cpuS = cpu0 === null ? null : cpu1 - cpu0;
  const l = lat.summary();
  return {
    requests: done, errors, first_error: firstError, elapsed_s: round(elapsed, 3),
    rps: round(done / elapsed, 0), latency_ms: l,
    server_cpu_us_per_req: cpuS === null || done === 0 ? null : round((cpuS * 1e6) / done, 1),
    loadgen_cpu_pct: round(self() * 100, 1),
  };
}

async function runRest() {
  const K = num('concurrency', 32);
  const getMax = num('get-room-max', 2000);
  const agent = makeAgent(K);
  const ok200 = (r) => r.status === 200 && r.json !== null;
  const phases = {};
  let n = 0;
  phases.create_room = await restPhase('create_room', K, Infinity,
    () => requestJson(agent, HOST, PORT, 'POST', '/api/create_room', { roomId: `rest-${runTag}-${n++}` }),
    (r) => ok200(r) && r.json.success === true);
  phases.check_room = await restPhase('check_room', K, Infinity,
    (i) => requestJson(agent, HOST, PORT, 'POST', '/api/check_room', { roomId: `rest-${runTag}-${(i < 0 ? 0 : i) % Math.max(1, n)}` }),
    (r) => ok200(r) && typeof r.json.available === 'boolean');
  // get_room draws from a 4-digit space, so it is bounded in count to keep collisions rare.
  phases.get_room = await restPhase('get_room', K, getMax,
    () => requestJson(agent, HOST, PORT, 'GET', '/api/get_room'),
    (r) => ok200(r) && typeof r.json.roomId === 'string');
  agent.destroy();
  const errs = Object.values(phases).reduce((s, p) => s + p.errors, 0);
  const r = {
    concurrency: K, duration_s: DURATION, phases,
    create_room_rps: phases.create_room.rps, check_room_rps: phases.check_room.rps, get_room_rps: phases.get_room.rps,
    create_room_p99_ms: phases.create_room.latency_ms.p99, check_room_p99_ms: phases.check_room.latency_ms.p99,
    get_room_p99_ms: phases.get_room.latency_ms.p99,
    error: errs > 0 ? `${errs} failed requests` : undefined,
  };
  const line = (k) => `${k} ${phases[k].rps} req/s p50 ${phases[k].latency_ms.p50} ms p99 ${phases[k].latency_ms.p99} ms` +
    ` (${phases[k].server_cpu_us_per_req} µs server CPU/req)`;
  emitResult(r, `rest (${K} keep-alive connections): ${line('create_room')}; ${line('check_room')}; ${line('get_room')}` +
    (errs ? `; ${errs} errors, first: ${Object.values(phases).map((p) => p.first_error).filter(Boolean)[0]}` : ''));
  return r.error ? 1 : 0;
}

// ---------------------------------------------------------------- main
async function main() {
  switch (scenario) {
    case 'relay': return runRelay('ws');
    case 'polling': return runRelay('polling');
    case 'conns': return runConns();
    case 'joins': return runJoins();
    case 'rest': return runRest();
    default:
      console.error('unknown scenario ' + scenario + '\n' + USAGE);
      return 2;
  }
}

main().then((code) => {
  restAgent.destroy();
  process.exit(code);
}, (err) => {
  emitResult({ error: String(err && err.stack || err) }, 'ERROR ' + (err && err.message));
  process.exit(1);
});
