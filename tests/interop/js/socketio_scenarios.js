/*
 * Runs one scenario of the official socket.io-client against a Socket.IO
 * server (driven by tests/interop/test_js_client.py).
 *
 *   node socketio_scenarios.js <base url> <mode> <scenario>
 *
 * mode: "websocket" (websocket only), "polling" (polling only), or
 * "upgrade" (polling first, then upgrade to websocket).
 * scenario: "exchange", "reconnect" or "bigAuth" (see below).
 *
 * Prints one JSON object per line: {"step": name, ...} as it goes, and at the
 * end {"result": {...}} with everything observed. Buffers are written as
 * {"buffer": [bytes]}. Nothing waits on time except the overall deadline,
 * which turns a missing event into {"error": ...} and exit code 1.
 */
"use strict";

const { io } = require("socket.io-client");

const [baseUrl, mode, scenario] = process.argv.slice(2);
const DEADLINE_MS = 15000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function plain(value) {
  if (Buffer.isBuffer(value)) return { buffer: Array.from(value) };
  if (value instanceof ArrayBuffer) return { buffer: Array.from(new Uint8Array(value)) };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const result = {};
    for (const [k, v] of Object.entries(value)) result[k] = plain(v);
    return result;
  }
  return value;
}

function options(extra) {
  const base = {
    forceNew: false,
    transports: mode === "websocket" ? ["websocket"] : mode === "polling" ? ["polling"] : ["polling", "websocket"],
    upgrade: mode === "upgrade",
  };
  return Object.assign(base, extra);
}

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

async function connected(socket) {
  if (socket.connected) return;
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error("connect_error: " + err.message)));
  });
}

async function upgraded(socket) {
  const engine = socket.io.engine;
  if (mode !== "upgrade" || engine.transport.name === "websocket") return;
  await once(engine, "upgrade");
}

async function exchange() {
  const result = {};
  const socket = io(baseUrl, options({ auth: { token: "t-123" }, reconnection: false }));
  const authReceived = once(socket, "auth");
  await connected(socket);
  result.id = socket.id;
  result.auth = plain((await authReceived)[0]);
  await upgraded(socket);
  result.transport = socket.io.engine.transport.name;
  out({ step: "connected", id: socket.id, transport: result.transport });
  result.engineId = socket.io.engine.id;
  // Knowing a socket id must not give access to the session behind it.
  result.pollWithSocketIdStatus = (await fetch(
    baseUrl + "/socket.io/?EIO=4&transport=polling&sid=" + encodeURIComponent(socket.id))).status;

  const back = once(socket, "message-back");
  socket.emit("message", 1, "2", { 3: [true] }, Buffer.from([1, 2, 3]));
  result.messageBack = plain(await back);

  result.ack = plain(await new Promise((resolve) =>
    socket.emit("message-with-ack", "x", Buffer.from([4, 5]), (...args) => resolve(args))));

  socket.on("question", (question, callback) => callback("answer", question, Buffer.from([9])));
  const answered = once(socket, "client-answered");
  socket.emit("ask-client");
  result.clientAnswered = plain(await answered);

  const custom = io(baseUrl + "/custom", options({ auth: { room: "c" }, reconnection: false }));
  const customAuth = once(custom, "auth");
  await connected(custom);
  result.customId = custom.id;
  result.customAuth = plain((await customAuth)[0]);
  result.sameManager = custom.io === socket.io;
  custom.disconnect();

  const refused = io(baseUrl + "/nowhere", options({ reconnection: false }));
  result.unknownNamespace = (await once(refused, "connect_error"))[0].message;

  const disconnected = once(socket, "disconnect");
  socket.emit("disconnect-me");
  result.disconnectReason = (await disconnected)[0];
  result.activeAfterDisconnect = socket.active;
  result.transportAtEnd = socket.io.engine ? socket.io.engine.transport.name : null;
  socket.io.engine && socket.io.engine.close();
  return result;
}

async function reconnect() {
  const result = {};
  const socket = io(baseUrl, options({ reconnectionDelay: 10, reconnectionDelayMax: 50, randomizationFactor: 0 }));
  await connected(socket);
  await upgraded(socket);
  result.firstId = socket.id;
  result.firstTransport = socket.io.engine.transport.name;
  out({ step: "connected", id: socket.id });
  const disconnected = once(socket, "disconnect");
  const reconnected = once(socket.io, "reconnect");
  socket.emit("drop-me");
  result.disconnectReason = (await disconnected)[0];
  await reconnected;
  await connected(socket);
  result.secondId = socket.id;
  result.ackAfterReconnect = plain(await new Promise((resolve) =>
    socket.emit("message-with-ack", "again", (...args) => resolve(args))));
  socket.disconnect();
  return result;
}

// A CONNECT whose auth passes the server's cap: connect_error, and the
// client does not keep reconnecting with the same payload; a small auth
// (what connection-state recovery sends) still connects.
async function bigAuth() {
  const result = {};
  const socket = io(baseUrl, options({ auth: { blob: "x".repeat(10000) },
    reconnectionDelay: 10, reconnectionDelayMax: 50 }));
  let attempts = 0;
  socket.io.on("reconnect_attempt", () => attempts++);
  const [err] = await once(socket, "connect_error");
  result.message = err.message;
  result.active = socket.active;
  result.connected = socket.connected;
  result.managerState = socket.io._readyState;
  const small = io(baseUrl, options({ auth: { pid: "p".repeat(20), offset: "o".repeat(20) },
    forceNew: true, reconnection: false }));
  const authReceived = once(small, "auth");
  await connected(small);
  result.smallAuth = plain((await authReceived)[0]);
  result.reconnectAttempts = attempts;
  small.disconnect();
  return result;
}

const scenarios = { exchange, reconnect, bigAuth };

const timer = setTimeout(() => {
  out({ error: "deadline exceeded" });
  process.exit(1);
}, DEADLINE_MS);

scenarios[scenario]()
  .then((result) => {
    out({ result });
    clearTimeout(timer);
    process.exit(0);
  })
  .catch((err) => {
    out({ error: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  });
