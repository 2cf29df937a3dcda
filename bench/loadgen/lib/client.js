'use strict';
// Minimal Socket.IO clients over raw Engine.IO framing: WebSocket (ws package) and
// HTTP long-polling (node:http with a shared keep-alive agent).
//
// Both expose the same surface:
//   await c.connect(timeoutMs)   -> resolves once the Socket.IO CONNECT ack arrives; c.sid is set
//   c.send(packetString)         -> sends one Engine.IO packet, e.g. framing.encodeEvent(...)
//   c.onEvent = (packet) => {}   -> every "42[...]" packet, unparsed
//   c.close()                    -> closes the transport (the server sees a disconnect)
//   c.open, c.pings, c.lastPingAt, c.closeReason

const http = require('http');
const WebSocket = require('ws');
const { performance } = require('perf_hooks');
const framing = require('./framing');

const { EIO, SIO } = framing;

class BaseClient {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.eioSid = null;
    this.sid = null;          // Socket.IO socket id (what the server calls socket.id)
    this.open = false;
    this.pings = 0;
    this.lastPingAt = 0;
    this.closeReason = null;
    this.onEvent = null;
    this.onClosed = null;
    this._connectWaiter = null;
  }

  // One Engine.IO packet from the server.
  _onPacket(p) {
    const t = p.charCodeAt(0);
    if (t === EIO.MESSAGE) {
      const s = p.charCodeAt(1);
      if (s === SIO.EVENT) {
        if (this.onEvent !== null) this.onEvent(p);
      } else if (s === SIO.CONNECT) {
        try {
          this.sid = JSON.parse(p.slice(2)).sid;
        } catch (e) {
          this._fail(new Error('bad CONNECT ack: ' + p.slice(0, 80)));
          return;
        }
        this._resolveConnect();
      } else if (s === SIO.CONNECT_ERROR) {
        this._fail(new Error('CONNECT_ERROR ' + p.slice(2, 200)));
      } else if (s === SIO.DISCONNECT) {
        this._closed('server namespace disconnect');
      }
    } else if (t === EIO.PING) {
      this.pings++;
      this.lastPingAt = performance.now();
      this.send(framing.PONG);
    } else if (t === EIO.OPEN) {
      let hs;
      try {
        hs = JSON.parse(p.slice(1));
      } catch (e) {
        this._fail(new Error('bad handshake: ' + p.slice(0, 80)));
        return;
      }
      this.eioSid = hs.sid;
      this.pingInterval = hs.pingInterval;
      this.pingTimeout = hs.pingTimeout;
      this._onOpen();
    } else if (t === EIO.CLOSE) {
      this._closed('server close packet');
    }
    // noop (6) and anything else: ignored
  }

  _waitConnect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._connectWaiter = null;
        reject(new Error('connect timeout'));
        this.close();
      }, timeoutMs);
      this._connectWaiter = { resolve, reject, timer };
    });
  }

  _resolveConnect() {
    const w = this._connectWaiter;
    if (w === null) return;
    this._connectWaiter = null;
    clearTimeout(w.timer);
    this.open = true;
    w.resolve(this);
  }

  _fail(err) {
    const w = this._connectWaiter;
    if (w !== null) {
      this._connectWaiter = null;
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.close();
  }

  _closed(reason) {
    if (this.closeReason === null) this.closeReason = reason;
    const wasOpen = this.open;
    this.open = false;
    const w = this._connectWaiter;
    if (w !== null) {
      this._connectWaiter = null;
      clearTimeout(w.timer);
      w.reject(new Error('closed before connect: ' + reason));
    }
    if (wasOpen && this.onClosed !== null) this.onClosed(this, reason);
  }
}

class WsClient extends BaseClient {
  connect(timeoutMs = 10000) {
    const url = `ws://${this.host}:${this.port}/socket.io/?EIO=4&transport=websocket`;
    const done = this._waitConnect(timeoutMs);
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: timeoutMs,
    });
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (!isBinary) this._onPacket(data.toString());
    });
    ws.on('close', (code) => this._closed('ws close ' + code));
    ws.on('error', (err) => {
      if (this.closeReason === null) this.closeReason = 'ws error: ' + err.message;
      this._fail(err);
    });
    return done;
  }

  _onOpen() {
    this.ws.send(framing.SIO_CONNECT);
  }

  send(packet) {
    if (this.ws.readyState === 1) this.ws.send(packet);
  }

  // Bytes queued in the socket but not yet written; used to detect a stalled server.
  buffered() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  close() {
    if (!this.ws) return;
    this.open = false;
    if (this.ws.readyState === 0 || this.ws.readyState === 1) {
      try { this.ws.close(); } catch (e) { this.ws.terminate(); }
    }
  }

  terminate() {
    if (this.ws) this.ws.terminate();
    this.open = false;
  }
}

// Long-polling: one GET always outstanding; at most one POST in flight, with packets
// queued meanwhile and sent together as one \x1e-joined payload (what browsers do).
class PollingClient extends BaseClient {
  constructor(host, port, agent) {
    super(host, port);
    this.agent = agent;
    this._queue = [];
    this._posting = false;
    this._stopped = false;
    this.postCount = 0;
    this.getCount = 0;
  }

  _path() {
    let p = '/socket.io/?EIO=4&transport=polling';
    if (this.eioSid !== null) p += '&sid=' + encodeURIComponent(this.eioSid);
    return p;
  }

  connect(timeoutMs = 10000) {
    const done = this._waitConnect(timeoutMs);
    this._poll();
    return done;
  }

  _onOpen() {
    this.send(framing.SIO_CONNECT);
  }

  _poll() {
    if (this._stopped) return;
    this.getCount++;
    const req = http.request({
      host: this.host, port: this.port, method: 'GET', path: this._path(), agent: this.agent,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          this._closed('poll HTTP ' + res.statusCode);
          this._stopped = true;
          return;
        }
        const body = chunks.length === 1 ? chunks[0].toString() : Buffer.concat(chunks).toString();
        const packets = framing.splitPayload(body);
        for (let i = 0; i < packets.length; i++) this._onPacket(packets[i]);
        this._poll();
      });
    });
    req.on('error', (err) => {
      this._stopped = true;
      this._closed('poll error: ' + err.message);
      this._fail(err);
    });
    req.end();
  }

  send(packet) {
    if (this._stopped) return;
    this._queue.push(packet);
    if (!this._posting) this._flush();
  }

  buffered() {
    return this._queue.length;
  }

  _flush() {
    if (this._queue.length === 0 || this.eioSid === null) return;
    const body = this._queue.length === 1 ? this._queue[0] : framing.joinPayload(this._queue);
    this._queue = [];
    this._posting = true;
    this.postCount++;
    const buf = Buffer.from(body);
    const req = http.request({
      host: this.host, port: this.port, method: 'POST', path: this._path(), agent: this.agent,
      headers: { 'Content-Type': 'text/plain;charset=UTF-8', 'Content-Length': buf.length },
    }, (res) => {
      res.resume();
      res.on('end', () => {
        this._posting = false;
        if (res.statusCode !== 200) {
          this._stopped = true;
          this._closed('post HTTP ' + res.statusCode);
          return;
        }
        if (this._queue.length > 0) this._flush();
      });
    });
    req.on('error', (err) => {
      this._posting = false;
      this._stopped = true;
      this._closed('post error: ' + err.message);
    });
    req.end(buf);
  }

  close() {
    if (this._stopped) return;
    if (this.eioSid !== null) {
      // The close packet tells the server to drop the session now rather than at ping timeout.
      this._queue.push('1');
      if (!this._posting) this._flush();
    }
    this._stopped = true;
    this.open = false;
  }

  terminate() {
    this._stopped = true;
    this.open = false;
  }
}

function makeAgent(maxSockets) {
  return new http.Agent({ keepAlive: true, maxSockets: maxSockets || Infinity, maxFreeSockets: 4096 });
}

module.exports = { WsClient, PollingClient, makeAgent };
