'use strict';
// Self-check of the load generator's Engine.IO / Socket.IO framing helpers.
// Run: (cd bench/loadgen && npm test)

const test = require('node:test');
const assert = require('node:assert');
const framing = require('../lib/framing');

test('event packets use the default namespace and a JSON array', () => {
  const p = framing.encodeEvent('join', { roomId: 'abcd1234' });
  assert.strictEqual(p, '42["join",{"roomId":"abcd1234"}]');
  assert.deepStrictEqual(framing.decodeEvent(p), { name: 'join', args: [{ roomId: 'abcd1234' }] });
});

test('event prefix matches encoded events without parsing', () => {
  const prefix = framing.eventPrefix('ice-candidate');
  assert.strictEqual(prefix, '42["ice-candidate",');
  assert.ok(framing.encodeEvent('ice-candidate', { peerId: 'x' }).startsWith(prefix));
  assert.ok(!framing.encodeEvent('ice-candidates', {}).startsWith(prefix));
});

test('polling payloads split and join on the record separator', () => {
  const body = '0{"sid":"a"}\x1e40{"sid":"b"}\x1e2';
  const packets = framing.splitPayload(body);
  assert.deepStrictEqual(packets, ['0{"sid":"a"}', '40{"sid":"b"}', '2']);
  assert.strictEqual(framing.joinPayload(packets), body);
  assert.deepStrictEqual(framing.splitPayload(''), []);
});

test('classify separates Engine.IO and Socket.IO packet types', () => {
  assert.deepStrictEqual(framing.classify('2'), { eio: framing.EIO.PING, sio: -1, data: '' });
  const c = framing.classify('40{"sid":"s1"}');
  assert.strictEqual(c.eio, framing.EIO.MESSAGE);
  assert.strictEqual(c.sio, framing.SIO.CONNECT);
  assert.strictEqual(c.data, '{"sid":"s1"}');
  assert.strictEqual(framing.classify('42["x"]').sio, framing.SIO.EVENT);
  assert.strictEqual(framing.classify('44{"message":"no"}').sio, framing.SIO.CONNECT_ERROR);
});

test('decodeEvent rejects packets that are not events', () => {
  assert.throws(() => framing.decodeEvent('42{"a":1}'));
  assert.throws(() => framing.decodeEvent('42[1,2]'));
  assert.throws(() => framing.decodeEvent('42[nope'));
});
