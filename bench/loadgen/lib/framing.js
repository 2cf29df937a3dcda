'use strict';
// Engine.IO v4 / Socket.IO v5 text framing, only as much as the load generator needs.
// Pure functions: strings in, strings or plain objects out.
//
// Engine.IO packet = one type digit + data:
//   0 open (JSON handshake), 1 close, 2 ping, 3 pong, 4 message, 5 upgrade, 6 noop.
// A long-polling payload joins several packets with the record separator \x1e.
// A Socket.IO packet travels inside an Engine.IO message (4):
//   0 CONNECT [json], 1 DISCONNECT, 2 EVENT json-array, 3 ACK, 4 CONNECT_ERROR json.
// Only the default namespace "/" is used, so no namespace prefix appears.

const RS = '\x1e';

const EIO = { OPEN: 48, CLOSE: 49, PING: 50, PONG: 51, MESSAGE: 52, UPGRADE: 53, NOOP: 54 };
const SIO = { CONNECT: 48, DISCONNECT: 49, EVENT: 50, ACK: 51, CONNECT_ERROR: 52 };

const PONG = '3';
const SIO_CONNECT = '40';
const SIO_DISCONNECT = '41';

// "42[...]" for an event on the default namespace.
function encodeEvent(name, payload) {
  return '42' + JSON.stringify([name, payload]);
}

// Split a long-polling payload into packets.
function splitPayload(body) {
  return body.length === 0 ? [] : body.split(RS);
}

function joinPayload(packets) {
  return packets.join(RS);
}

// Classify one Engine.IO packet string. Returns {eio, sio, data} where sio is set
// for messages carrying a Socket.IO packet and data is the text after the type digits.
function classify(packet) {
  const eio = packet.charCodeAt(0);
  if (eio !== EIO.MESSAGE) return { eio, sio: -1, data: packet.slice(1) };
  return { eio, sio: packet.charCodeAt(1), data: packet.slice(2) };
}

// Decode the JSON array of an EVENT packet ("42[...]", given whole). Throws on bad JSON.
function decodeEvent(packet) {
  const arr = JSON.parse(packet.slice(2));
  if (!Array.isArray(arr) || typeof arr[0] !== 'string') throw new Error('not an event: ' + packet.slice(0, 60));
  return { name: arr[0], args: arr.slice(1) };
}

// Cheap test for the event name without parsing the JSON: '42["name",'.
function eventPrefix(name) {
  return '42' + JSON.stringify([name]).slice(0, -1) + ',';
}

module.exports = {
  RS, EIO, SIO, PONG, SIO_CONNECT, SIO_DISCONNECT,
  encodeEvent, splitPayload, joinPayload, classify, decodeEvent, eventPrefix,
};
