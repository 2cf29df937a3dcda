/*
 * Remote-controlled socket.io-client instances for the signaling interop test
 * (tests/interop/test_signaling_js.py).
 *
 * Reads one JSON command per line on stdin and answers each with one JSON
 * line on stdout carrying the command's `seq`. Commands:
 *
 *   {"cmd":"connect","name":N,"url":U,"transport":"websocket"|"polling"|"upgrade","headers":{...},
 *    "localAddress":A?,"ca":PEM?,"reconnection":R?}
 *        -> {"id": <socket id>, "transport": <engine transport>, "version": <client version>}
 *        "upgrade" opens with polling and answers once the client upgraded to
 *        WebSocket; localAddress is the source address of every connection
 *        (both transports) and ca the PEM certificate an https:// server must have.
 *        With reconnection true the client reconnects on its own (quickly, no
 *        randomisation); its later "connect" events queue as pseudo-event
 *        "reconnect" ({id, recovered}) and its "disconnect" reasons as "lost".
 *   {"cmd":"emit","name":N,"event":E,"args":[...],"ack":true|false}
 *        -> {"ack": [...]} once the server acknowledged (ack:true), or {} at once
 *   {"cmd":"next","name":N,"event":E,"timeoutMs":T}
 *        -> {"payload": P}: the oldest payload of E not yet taken (waits for it)
 *   {"cmd":"received","name":N,"event":E}
 *        -> {"payloads": [...]}: every payload of E not yet taken, without waiting
 *   {"cmd":"fetch","method":M,"url":U,"body":B}
 *        -> {"status": S, "body": <parsed JSON>}
 *   {"cmd":"disconnect","name":N}  -> {}
 *   {"cmd":"closeEngine","name":N} -> {}: closes the Engine.IO connection (over
 *        WebSocket a close frame, over polling a close packet), as a page does
 *        when it goes away
 *   {"cmd":"quit"}                 -> exits after disconnecting every client
 *
 * Failures answer {"seq": S, "error": "..."}. Nothing here waits on time
 * except the timeouts that turn a missing event into an error answer.
 */
"use strict";

const http = require("http");
const https = require("https");
const path = require("path");
const readline = require("readline");

// SOCKET_IO_CLIENT_DIR picks one installed copy of socket.io-client (the
// test runs the PrivyDrop frontend's 4.7 and this folder's newer one).
const clientDir = process.env.SOCKET_IO_CLIENT_DIR || path.dirname(require.resolve("socket.io-client/package.json"));
const { io } = require(clientDir);
const clientVersion = require(path.join(clientDir, "package.json")).version;

const SIGNALING_EVENTS = [
  "joinResponse", "ready", "offer", "answer", "ice-candidate",
  "initiator-online", "recipient-ready", "peer-disconnected",
  // Not signaling: the reason, when the server ends the connection.
  "disconnect",
];

const clients = new Map();

function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function client(name) {
  const found = clients.get(name);
  if (!found) {
    throw new Error("no client named " + name);
  }
  return found;
}

function connect(command) {
  return new Promise(function (resolve, reject) {
    const upgrading = command.transport === "upgrade";
    const options = {
      transports: upgrading ? ["polling", "websocket"] : [command.transport],
      upgrade: upgrading,
      reconnection: Boolean(command.reconnection),
      reconnectionDelay: 100,
      reconnectionDelayMax: 200,
      randomizationFactor: 0,
      forceNew: true,
      timeout: 10000,
      extraHeaders: command.headers || {},
    };
    if (command.localAddress || command.ca) {
      // Polling requests go through the agent; the WebSocket client takes
      // the same options directly.
      const secure = command.url.startsWith("https:");
      const agentOptions = { localAddress: command.localAddress, ca: command.ca };
      options.agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
      if (command.localAddress) {
        options.localAddress = command.localAddress;
      }
      if (command.ca) {
        options.ca = command.ca;
      }
    }
    const socket = io(command.url, options);
    const entry = { socket: socket, queues: new Map(), waiters: new Map() };
    function record(event, payload) {
      const waiting = entry.waiters.get(event);
      if (waiting.length > 0) {
        waiting.shift()(payload);
      } else {
        entry.queues.get(event).push(payload);
      }
    }
    for (const event of [...SIGNALING_EVENTS, "reconnect", "lost"]) {
      entry.queues.set(event, []);
      entry.waiters.set(event, []);
    }
    for (const event of SIGNALING_EVENTS) {
      socket.on(event, function (payload) { record(event, payload); });
    }
    clients.set(command.name, entry);
    socket.once("connect", function () {
      socket.on("connect", function () {
        record("reconnect", { id: socket.id, recovered: socket.recovered === true });
      });
      socket.on("disconnect", function (reason) { record("lost", reason); });
      const engine = socket.io.engine;
      const answer = function () {
        resolve({ id: socket.id, transport: engine.transport.name, version: clientVersion });
      };
      if (upgrading && engine.transport.name !== "websocket") {
        engine.once("upgrade", answer);
        engine.once("upgradeError", function (err) { reject(new Error("upgradeError: " + err.message)); });
      } else {
        answer();
      }
    });
    socket.once("connect_error", function (err) { reject(new Error("connect_error: " + err.message)); });
  });
}

function next(command) {
  const entry = client(command.name);
  const queue = entry.queues.get(command.event);
  if (queue === undefined) {
    return Promise.reject(new Error("not listening for " + command.event));
  }
  if (queue.length > 0) {
    return Promise.resolve({ payload: queue.shift() });
  }
  return new Promise(function (resolve, reject) {
    const waiters = entry.waiters.get(command.event);
    const timer = setTimeout(function () {
      const index = waiters.indexOf(deliver);
      if (index >= 0) {
        waiters.splice(index, 1);
      }
      reject(new Error("timed out waiting for " + command.event + " on " + command.name));
    }, command.timeoutMs || 10000);
    function deliver(payload) {
      clearTimeout(timer);
      resolve({ payload: payload });
    }
    waiters.push(deliver);
  });
}

async function run(command) {
  switch (command.cmd) {
    case "connect":
      return connect(command);
    case "emit": {
      const socket = client(command.name).socket;
      if (command.ack) {
        const ack = await socket.timeout(command.timeoutMs || 10000).emitWithAck(command.event, ...command.args);
        return { ack: ack === undefined ? [] : [ack] };
      }
      socket.emit(command.event, ...command.args);
      return {};
    }
    case "next":
      return next(command);
    case "received": {
      const queue = client(command.name).queues.get(command.event);
      return { payloads: queue.splice(0) };
    }
    case "fetch": {
      const init = { method: command.method, headers: {} };
      if (command.body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(command.body);
      }
      const response = await fetch(command.url, init);
      return { status: response.status, body: await response.json() };
    }
    case "disconnect":
      client(command.name).socket.disconnect();
      return {};
    case "closeEngine":
      client(command.name).socket.io.engine.close();
      return {};
    default:
      throw new Error("unknown command " + command.cmd);
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", function (line) {
  if (!line.trim()) {
    return;
  }
  const command = JSON.parse(line);
  if (command.cmd === "quit") {
    for (const entry of clients.values()) {
      entry.socket.disconnect();
    }
    reply({ seq: command.seq });
    lines.close();
    return;
  }
  run(command).then(
    function (result) { reply(Object.assign({ seq: command.seq }, result)); },
    function (err) { reply({ seq: command.seq, error: String(err && err.message || err) }); }
  );
});
lines.on("close", function () {
  for (const entry of clients.values()) {
    entry.socket.disconnect();
  }
  process.exitCode = 0;
});
