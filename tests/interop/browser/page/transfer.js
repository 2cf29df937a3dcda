/*
 * One peer of a PrivyDrop-style file transfer, for the browser interop test.
 *
 * The page meets another page in a room through the signaling server with
 * socket.io-client (the same events and payloads the PrivyDrop frontend
 * uses: join, joinResponse, ready, offer, answer, ice-candidate,
 * peer-disconnected), opens an RTCDataChannel and sends or receives one file.
 * The test driver calls the functions on window.privydropTest; every
 * function returns a Promise of plain JSON so Playwright can carry it back.
 *
 * The file is generated, not read: byte i comes from a 32-bit linear
 * congruential generator, so the Python test can compute the expected SHA-256
 * on its own and compare it with what the receiving page hashed.
 */
"use strict";

(function () {
  const CHUNK_BYTES = 16 * 1024;
  const HIGH_WATER_BYTES = 1024 * 1024;
  const LOW_WATER_BYTES = 256 * 1024;

  const state = {
    server: null,
    socket: null,
    pc: null,
    peerId: null,
    pendingCandidates: [],
    remoteDescriptionSet: false,
    events: [],
    candidatesSent: 0,
    candidatesReceived: 0,
    peerDisconnected: null,
    readyPeers: [],
    readyWaiters: [],
    relay: false,
    iceServers: null,
    candidateTypesSent: [],
    reconnects: [],
    reconnectWaiters: [],
    pause: null,
  };

  function note(name, fields) {
    state.events.push(Object.assign({ name: name, t: Math.round(performance.now()) }, fields || {}));
  }

  function waitFor(socket, eventName, predicate) {
    return new Promise(function (resolve) {
      function listener(payload) {
        if (!predicate || predicate(payload)) {
          socket.off(eventName, listener);
          resolve(payload);
        }
      }
      socket.on(eventName, listener);
    });
  }

  /* Generated file contents: see the module comment. */
  function generate(size, seed) {
    const bytes = new Uint8Array(size);
    let x = seed >>> 0;
    for (let i = 0; i < size; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      bytes[i] = x >>> 24;
    }
    return bytes;
  }

  async function sha256Hex(bytes) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  /*
   * Direct connections only, or (relay mode) only through the TURN servers
   * the signaling server put in joinResponse, with its short-lived credentials.
   */
  function peerConfiguration() {
    if (!state.relay) {
      return { iceServers: [] };
    }
    if (!state.iceServers || state.iceServers.length === 0) {
      throw new Error("relay mode, but joinResponse carried no iceServers");
    }
    return { iceServers: state.iceServers, iceTransportPolicy: "relay" };
  }

  /* The candidate types of the pair the connection uses, from getStats(). */
  async function selectedCandidateTypes(pc) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(function (report) {
      if (report.type === "transport" && report.selectedCandidatePairId) {
        pair = stats.get(report.selectedCandidatePairId);
      }
    });
    if (pair === null) {
      return null;
    }
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local && local.candidateType, remote: remote && remote.candidateType };
  }

  function newPeerConnection(peerId) {
    const pc = new RTCPeerConnection(peerConfiguration());
    pc.onicecandidate = function (event) {
      if (event.candidate) {
        state.candidatesSent += 1;
        state.candidateTypesSent.push(event.candidate.type);
        state.socket.emit("ice-candidate", {
          candidate: event.candidate.toJSON(),
          peerId: peerId,
          from: state.socket.id,
        });
      }
    };
    pc.onconnectionstatechange = function () { note("pc-state", { state: pc.connectionState }); };
    state.pc = pc;
    state.peerId = peerId;
    return pc;
  }

  async function remoteDescriptionArrived(description) {
    await state.pc.setRemoteDescription(description);
    state.remoteDescriptionSet = true;
    const queued = state.pendingCandidates.splice(0);
    for (const candidate of queued) {
      await state.pc.addIceCandidate(candidate);
    }
  }

  function listenForCandidates(socket) {
    socket.on("ice-candidate", function (payload) {
      state.candidatesReceived += 1;
      if (state.pc && state.remoteDescriptionSet) {
        state.pc.addIceCandidate(payload.candidate).catch(function (err) {
          note("add-candidate-failed", { error: String(err) });
        });
      } else {
        state.pendingCandidates.push(payload.candidate);
      }
    });
    // Kept from the moment of connecting: the other page may join before
    // this one starts sending.
    socket.on("ready", function (payload) {
      note("ready", { peerId: payload.peerId });
      const waiter = state.readyWaiters.shift();
      if (waiter) {
        waiter(payload.peerId);
      } else {
        state.readyPeers.push(payload.peerId);
      }
    });
    socket.on("peer-disconnected", function (payload) {
      state.peerDisconnected = payload;
      note("peer-disconnected", { peerId: payload.peerId });
    });
  }

  /* Connect to the signaling server with exactly one transport. */
  function connect(options) {
    note("connect", { transport: options.transport });
    state.server = options.server;
    state.relay = Boolean(options.relay);
    const socket = io(options.server, {
      transports: [options.transport],
      upgrade: false,
      reconnection: Boolean(options.reconnection),
      reconnectionDelay: 200,
      randomizationFactor: 0,
      timeout: 10000,
    });
    state.socket = socket;
    listenForCandidates(socket);
    return new Promise(function (resolve, reject) {
      socket.once("connect", function () {
        // Later connects are reconnections (connection state recovery).
        socket.on("connect", function () {
          const back = { socketId: socket.id, recovered: socket.recovered === true };
          note("reconnect", back);
          const waiter = state.reconnectWaiters.shift();
          if (waiter) {
            waiter(back);
          } else {
            state.reconnects.push(back);
          }
        });
        socket.on("disconnect", function (reason) { note("signaling-lost", { reason: reason }); });
        resolve({ socketId: socket.id, transport: socket.io.engine.transport.name });
      });
      socket.once("connect_error", function (err) { reject(new Error("connect_error: " + err.message)); });
    });
  }

  /* A fresh room id from the REST API (a CORS request from this page's origin). */
  async function createRoom() {
    const response = await fetch(state.server + "/api/get_room");
    if (!response.ok) {
      throw new Error("get_room answered " + response.status);
    }
    const body = await response.json();
    return body.roomId;
  }

  /* Join a room; resolves with the successful joinResponse. */
  async function join(roomId) {
    const answer = waitFor(state.socket, "joinResponse", function (p) { return p.roomId === roomId; });
    state.socket.emit("join", { roomId: roomId });
    const response = await answer;
    if (!response.success) {
      throw new Error("join refused: " + response.message);
    }
    state.iceServers = response.iceServers || null;
    note("joined");
    return response;
  }

  function sendAll(channel, bytes) {
    return new Promise(function (resolve, reject) {
      let offset = 0;
      channel.bufferedAmountLowThreshold = LOW_WATER_BYTES;
      function pump() {
        try {
          while (offset < bytes.length) {
            const pause = state.pause;
            if (pause && !pause.reached && offset >= pause.afterBytes) {
              // Halfway through, wait for the driver (it cuts signaling meanwhile).
              pause.reached = true;
              pause.onReached();
              pause.resumed.then(pump);
              return;
            }
            if (channel.bufferedAmount > HIGH_WATER_BYTES) {
              channel.onbufferedamountlow = function () {
                channel.onbufferedamountlow = null;
                pump();
              };
              return;
            }
            const end = Math.min(offset + CHUNK_BYTES, bytes.length);
            channel.send(bytes.subarray(offset, end));
            offset = end;
          }
          channel.send("EOF:" + bytes.length);
          resolve();
        } catch (err) {
          reject(err);
        }
      }
      pump();
    });
  }

  /*
   * Sender (after join): wait for the receiver's `ready`, offer, send the
   * file over a data channel, wait for the receiver's acknowledgement.
   */
  function nextReadyPeer() {
    if (state.readyPeers.length > 0) {
      return Promise.resolve(state.readyPeers.shift());
    }
    return new Promise(function (resolve) { state.readyWaiters.push(resolve); });
  }

  async function send(options) {
    const socket = state.socket;
    if (options.pauseAfterBytes) {
      let onReached;
      let resume;
      state.pause = {
        afterBytes: options.pauseAfterBytes,
        reached: false,
        reachedPromise: new Promise(function (r) { onReached = r; }),
        resumed: new Promise(function (r) { resume = r; }),
      };
      state.pause.onReached = onReached;
      state.pause.resume = resume;
    }
    const bytes = generate(options.size, options.seed);
    const sentHash = await sha256Hex(bytes);
    const peerId = await nextReadyPeer();

    const pc = newPeerConnection(peerId);
    const channel = pc.createDataChannel("file", { ordered: true });
    channel.binaryType = "arraybuffer";
    const opened = new Promise(function (resolve) { channel.onopen = resolve; });
    const acknowledged = new Promise(function (resolve) {
      channel.onmessage = function (event) { resolve(String(event.data)); };
    });

    socket.on("answer", function (payload) {
      note("answer", { from: payload.from, peerId: payload.peerId });
      remoteDescriptionArrived(payload.answer).catch(function (err) {
        note("answer-failed", { error: String(err) });
      });
    });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    socket.emit("offer", { offer: pc.localDescription.toJSON(), peerId: peerId, from: socket.id });

    await opened;
    note("channel-open");
    await sendAll(channel, bytes);
    const ack = await acknowledged;
    note("acknowledged", { ack: ack });
    const candidateTypes = await selectedCandidateTypes(pc);
    return {
      role: "sender",
      socketId: socket.id,
      peerId: peerId,
      bytes: bytes.length,
      sha256: sentHash,
      ack: ack,
      candidateTypes: candidateTypes,
      candidateTypesSent: state.candidateTypesSent,
      transport: socket.io.engine.transport.name,
      candidatesSent: state.candidatesSent,
      candidatesReceived: state.candidatesReceived,
      events: state.events,
    };
  }

  /*
   * Receiver: join the room, answer the offer, collect the file, hash it and
   * acknowledge it with the hash.
   */
  async function receive(options) {
    const socket = state.socket;
    const offerArrived = waitFor(socket, "offer");
    await join(options.roomId);
    const offer = await offerArrived;
    note("offer", { from: offer.from, peerId: offer.peerId });

    const pc = newPeerConnection(offer.from);
    const received = new Promise(function (resolve, reject) {
      pc.ondatachannel = function (event) {
        const channel = event.channel;
        channel.binaryType = "arraybuffer";
        const chunks = [];
        let total = 0;
        channel.onmessage = function (message) {
          if (typeof message.data === "string") {
            const declared = Number(message.data.slice("EOF:".length));
            const whole = new Uint8Array(total);
            let at = 0;
            for (const chunk of chunks) {
              whole.set(chunk, at);
              at += chunk.length;
            }
            sha256Hex(whole).then(function (hash) {
              channel.send("ACK:" + hash);
              resolve({ bytes: total, declared: declared, sha256: hash });
            }, reject);
          } else {
            const chunk = new Uint8Array(message.data);
            chunks.push(chunk);
            total += chunk.length;
          }
        };
      };
    });

    await remoteDescriptionArrived(offer.offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    socket.emit("answer", { answer: pc.localDescription.toJSON(), peerId: offer.from, from: socket.id });

    const file = await received;
    note("received", { bytes: file.bytes });
    const candidateTypes = await selectedCandidateTypes(pc);
    return {
      role: "receiver",
      socketId: socket.id,
      peerId: offer.from,
      offerPeerId: offer.peerId,
      bytes: file.bytes,
      declared: file.declared,
      sha256: file.sha256,
      candidateTypes: candidateTypes,
      candidateTypesSent: state.candidateTypesSent,
      transport: socket.io.engine.transport.name,
      candidatesSent: state.candidatesSent,
      candidatesReceived: state.candidatesReceived,
      events: state.events,
    };
  }

  /* Resolves with the `peer-disconnected` payload once the other peer left. */
  function peerDisconnected() {
    if (state.peerDisconnected) {
      return Promise.resolve(state.peerDisconnected);
    }
    return waitFor(state.socket, "peer-disconnected");
  }

  function disconnect() {
    if (state.pc) {
      state.pc.close();
    }
    state.socket.disconnect();
    return Promise.resolve(true);
  }

  /* Resolves once the sender paused halfway (send's pauseAfterBytes). */
  function sendingPaused() {
    return state.pause.reachedPromise.then(function () { return true; });
  }

  function resumeSending() {
    state.pause.resume();
    return Promise.resolve(true);
  }

  /* Resolves with {socketId, recovered} of the next reconnection. */
  function reconnected() {
    if (state.reconnects.length > 0) {
      return Promise.resolve(state.reconnects.shift());
    }
    return new Promise(function (resolve) { state.reconnectWaiters.push(resolve); });
  }

  window.privydropTest = {
    sendingPaused: sendingPaused,
    resumeSending: resumeSending,
    reconnected: reconnected,
    peerDisconnectedSoFar: function () { return Promise.resolve(state.peerDisconnected); },
    connect: connect,
    createRoom: createRoom,
    join: join,
    send: send,
    receive: receive,
    peerDisconnected: peerDisconnected,
    disconnect: disconnect,
    events: function () { return Promise.resolve(state.events); },
  };
})();
