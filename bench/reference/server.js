'use strict';
// Reference PrivyDrop signaling server for bench/run: express + socket.io 4 + ioredis,
// with the PrivyDrop room rules, signaling events and REST API. It exists only to be
// measured side by side with the Python server; it is not shipped.
//
// Environment:
//   PORT (default 3001), HOST (default 127.0.0.1), REDIS_HOST, REDIS_PORT,
//   DISABLE_JOIN_RATE_LIMIT=1 to skip the per-IP join limit,
//   NODE_ENV, CORS_ORIGIN (comma-separated list in production),
//   QUIET=1 to drop the per-event console lines (they are on by default, as in production).

const http = require('http');
const express = require('express');
const cors = require('cors');
const { Server } = require('socket.io');
const { Redis } = require('ioredis');

const ROOM_PREFIX = 'room:';
const SOCKET_PREFIX = 'socket:';
const ROOM_EXPIRY = 3600 * 24;             // seconds a room lives without activity
const SOCKET_EXPIRY = ROOM_EXPIRY + 3600;  // socket -> room binding outlives the room by an hour
const EMPTY_ROOM_EXPIRY = 900;             // an empty room is kept 15 minutes for reconnects
const RATE_PREFIX = 'ratelimit:join:';
const RATE_WINDOW_SECONDS = 5;
const RATE_LIMIT = 2;
const TRACK_TTL = 30 * 24 * 3600;

const env = process.env;
const PORT = parseInt(env.PORT || env.BACKEND_PORT || '3001', 10);
const HOST = env.HOST || '127.0.0.1';
const NODE_ENV = env.NODE_ENV === 'production' ? 'production' : 'development';
const DISABLE_JOIN_RATE_LIMIT = env.DISABLE_JOIN_RATE_LIMIT === '1';
const QUIET = env.QUIET === '1';
if (!env.REDIS_HOST || !env.REDIS_PORT) {
  console.error('REDIS_HOST and REDIS_PORT must be set');
  process.exit(1);
}

const log = QUIET ? () => {} : (...args) => console.log(...args);

// ---------------------------------------------------------------- CORS
const DEV_ORIGINS = [
  env.CORS_ORIGIN,
  'http://localhost:3002',
  /^http:\/\/192\.168\.\d+\.\d+:3002$/,
].filter(Boolean);

function allowedOrigins() {
  if (NODE_ENV !== 'production') return DEV_ORIGINS;
  const v = (env.CORS_ORIGIN || '').trim();
  if (!v) return DEV_ORIGINS;
  return v.includes(',') ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
}

const httpCors = {
  origin: allowedOrigins(),
  methods: ['GET', 'POST', 'OPTIONS'],
  credentials: true,
  allowedHeaders: ['Content-Type', 'Authorization'],
};
const wsCors = { origin: allowedOrigins(), methods: ['GET', 'POST'], credentials: true };

// ---------------------------------------------------------------- store
const redis = new Redis({ host: env.REDIS_HOST, port: parseInt(env.REDIS_PORT, 10) });
redis.on('error', (err) => console.error('Redis connection error:', err.message));

const rooms = {
  async exists(roomId) {
    return (await redis.hexists(ROOM_PREFIX + roomId, 'created_at')) === 1;
  },
  async create(roomId) {
    const key = ROOM_PREFIX + roomId;
    await redis.multi()
      .hset(key, 'created_at', Date.now())
      .expire(key, ROOM_EXPIRY)
      .expire(key + ':sockets', ROOM_EXPIRY)
      .exec();
  },
  async refresh(roomId, expiry = 0) {
    const ttl = expiry > 0 ? expiry : ROOM_EXPIRY;
    const key = ROOM_PREFIX + roomId;
    log(`EXPIRY of roomId:${roomId} is ${ttl}`);
    await redis.multi().expire(key, ttl).expire(key + ':sockets', ttl).exec();
  },
  async bind(socketId, roomId) {
    await redis.multi()
      .set(SOCKET_PREFIX + socketId, roomId, 'EX', SOCKET_EXPIRY)
      .sadd(ROOM_PREFIX + roomId + ':sockets', socketId)
      .exec();
  },
  async roomOf(socketId) {
    return redis.get(SOCKET_PREFIX + socketId);
  },
  async unbind(socketId, roomId) {
    await redis.multi()
      .del(SOCKET_PREFIX + socketId)
      .srem(ROOM_PREFIX + roomId + ':sockets', socketId)
      .exec();
  },
  async isEmpty(roomId) {
    return (await redis.scard(ROOM_PREFIX + roomId + ':sockets')) === 0;
  },
};

function randomId(alphabet, length) {
  let s = '';
  for (let i = 0; i < length; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}

// Four digits first; after ten collisions fall back to four alphanumerics.
async function availableRoomId() {
  for (let i = 0; i < 10; i++) {
    const id = randomId('0123456789', 4);
    if (!(await rooms.exists(id))) return id;
  }
  const alnum = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  for (let i = 0; i < 50; i++) {
    const id = randomId(alnum, 4);
    if (!(await rooms.exists(id))) return id;
  }
  throw new Error('Failed to generate a unique room ID.');
}

// Sliding window per IP: at most RATE_LIMIT joins in RATE_WINDOW_SECONDS.
async function checkRateLimit(ip) {
  const key = RATE_PREFIX + ip;
  const now = Date.now();
  const results = await redis.pipeline()
    .zadd(key, now, `${now}-${Math.random()}`)
    .zremrangebyscore(key, 0, now - RATE_WINDOW_SECONDS * 1000)
    .zcard(key)
    .zrange(key, 0, 0, 'WITHSCORES')
    .expire(key, RATE_WINDOW_SECONDS)
    .exec();
  if (!results) return { allowed: false, remaining: 0, resetAfter: RATE_WINDOW_SECONDS };
  const count = results[2][1];
  const oldest = results[3][1];
  const oldestScore = oldest && oldest[1] ? Number(oldest[1]) : now;
  return {
    allowed: count <= RATE_LIMIT,
    remaining: Math.max(RATE_LIMIT - count, 0),
    resetAfter: Math.max(0, Math.ceil((oldestScore + RATE_WINDOW_SECONDS * 1000 - now) / 1000)),
  };
}

// ---------------------------------------------------------------- HTTP
const app = express();
app.use(cors(httpCors));
app.use(express.json());
const server = http.createServer(app);
const io = new Server(server, { cors: wsCors });
app.set('io', io);

const startedAt = Date.now();
function health(req, res) {
  res.status(200).json({
    status: 'healthy',
    timestamp: new Date().toISOString(),
    uptime: Math.floor((Date.now() - startedAt) / 1000),
    service: 'privydrop-backend',
    version: '1.0.0',
    environment: NODE_ENV,
  });
}
app.get('/health', health);
app.get('/api/health', health);

app.post('/api/create_room', async (req, res) => {
  const roomId = req.body && req.body.roomId;
  if (!roomId) return res.status(400).json({ error: 'Room ID is required' });
  try {
    if (await rooms.exists(roomId)) {
      // Long ids may be re-created for reconnects; short ids stay unique.
      if (roomId.length >= 8) return res.json({ success: true, message: 'room exists (rejoin allowed)' });
      return res.json({ success: false, message: 'roomId is already exists' });
    }
    await rooms.create(roomId);
    res.json({ success: true, message: 'create room success' });
  } catch (err) {
    console.error('Error creating room:', err);
    res.status(500).json({ error: 'Internal server error' });
  }
});

app.get('/api/get_room', async (req, res) => {
  try {
    const roomId = await availableRoomId();
    await rooms.create(roomId);
    res.json({ roomId });
  } catch (err) {
    console.error('Error getting room:', err);
    res.status(500).json({ error: 'Internal server error' });
  }
});

app.post('/api/check_room', async (req, res) => {
  const roomId = req.body && req.body.roomId;
  if (!roomId) return res.status(400).json({ error: 'Room ID is required' });
  try {
    res.json({ available: !(await rooms.exists(roomId)) });
  } catch (err) {
    console.error('Error checking room:', err);
    res.status(500).json({ error: 'Internal server error' });
  }
});

app.post('/api/set_track', async (req, res) => {
  try {
    const { ref, timestamp } = req.body || {};
    const key = `referrers:daily:${new Date(timestamp).toISOString().split('T')[0]}`;
    await redis.multi().hincrby(key, ref, 1).expire(key, TRACK_TTL).exec();
    res.status(200).json({ success: true });
  } catch (err) {
    console.error('Track API Error:', err);
    res.status(500).json({ success: false, error: 'Failed to track referrer' });
  }
});

app.post('/api/logs_debug', (req, res) => {
  const { message, timestamp } = req.body || {};
  log(`logs----timestamp:${timestamp} message:${message}`);
  res.status(200).json({ success: true });
});

app.post('/api/leave_room', async (req, res) => {
  const { roomId, socketId } = req.body || {};
  if (!roomId || !socketId) return res.status(400).json({ error: 'Room ID and Socket ID are required' });
  try {
    if (!(await rooms.exists(roomId))) return res.json({ success: true, message: 'Room does not exist.' });
    io.to(roomId).emit('peer-disconnected', { peerId: socketId });
    await rooms.unbind(socketId, roomId);
    if (await rooms.isEmpty(roomId)) await rooms.refresh(roomId, EMPTY_ROOM_EXPIRY);
    res.json({ success: true, message: 'Successfully left the room' });
  } catch (err) {
    console.error('Error leaving room:', err);
    res.status(500).json({ error: 'Internal server error' });
  }
});

// ---------------------------------------------------------------- signaling
io.on('connection', (socket) => {
  log('New client connected:', socket.id);

  socket.on('join', async (data) => {
    const roomId = data && data.roomId;
    try {
      const bound = await rooms.roomOf(socket.id);
      const rejoin = bound !== null && bound === roomId;
      if (bound && bound !== roomId) {
        socket.emit('joinResponse', { success: false, message: 'Socket is already bound to another room', roomId });
        return;
      }
      const fwd = socket.handshake.headers['x-forwarded-for'];
      const ip = Array.isArray(fwd) ? fwd[0] : fwd || socket.handshake.address;
      if (!rejoin && !DISABLE_JOIN_RATE_LIMIT) {
        const limit = await checkRateLimit(ip);
        if (!limit.allowed) {
          socket.emit('joinResponse', {
            success: false,
            message: `Rate limit exceeded. Try again in ${limit.resetAfter}s. Attempts left: ${limit.remaining}.`,
            roomId,
          });
          return;
        }
      }
      if (!(await rooms.exists(roomId))) {
        socket.emit('joinResponse', { success: false, message: 'Room does not exist', roomId });
        return;
      }
      if (!bound) {
        socket.join(roomId);
        log(`Client ${socket.id} joined room ${roomId}`);
        await rooms.bind(socket.id, roomId);
      }
      await rooms.refresh(roomId);
      socket.emit('joinResponse', { success: true, message: 'Successfully joined room', roomId });
      socket.to(roomId).emit('ready', { peerId: socket.id });
    } catch (err) {
      console.error('Error joining room:', err);
      socket.emit('joinResponse', {
        success: false,
        message: 'Server error while joining room',
        error: err instanceof Error ? err.message : 'Unknown error',
      });
    }
  });

  // Peer-to-peer signaling goes to the peer's own room (its socket id).
  socket.on('offer', (data) => {
    socket.to(data.peerId).emit('offer', { offer: data.offer, from: data.from, peerId: socket.id });
  });
  socket.on('answer', (data) => {
    socket.to(data.peerId).emit('answer', { answer: data.answer, from: data.from, peerId: socket.id });
  });
  socket.on('ice-candidate', (data) => {
    socket.to(data.peerId).emit('ice-candidate', { candidate: data.candidate, from: data.from, peerId: socket.id });
  });
  socket.on('initiator-online', (data) => {
    socket.to(data.roomId).emit('initiator-online', { roomId: data.roomId });
  });
  socket.on('recipient-ready', (data) => {
    socket.to(data.roomId).emit('recipient-ready', { peerId: data.peerId });
  });

  socket.on('disconnect', async () => {
    log('Disconnected:', socket.id);
    try {
      const roomId = await rooms.roomOf(socket.id);
      if (!roomId) return;
      socket.to(roomId).emit('peer-disconnected', { peerId: socket.id });
      await rooms.unbind(socket.id, roomId);
      if (await rooms.isEmpty(roomId)) {
        await rooms.refresh(roomId, EMPTY_ROOM_EXPIRY);
        log(`Room ${roomId} is empty and will be deleted in 15 min due to disconnect.`);
      }
    } catch (err) {
      console.error('Error on disconnect:', err);
    }
  });
});

server.listen(PORT, HOST, () => {
  console.log(`Signaling server running in ${NODE_ENV} mode on ${HOST}:${PORT}`);
});

function shutdown() {
  io.close();
  redis.disconnect();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
