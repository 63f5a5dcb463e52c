// Socket.IO 4 peer for plaza-bench: the same job as a Plaza edge, written the way a Socket.IO
// team would. Clients authenticate with an HS256 JWT (handshake `auth.token`), join rooms with a
// `join` event (acknowledged), publish with `pub` (room, data) which the server broadcasts to the
// room as `m` (data) — to every member, the sender included, like Plaza. Rooms span processes
// through the Redis adapter. WebSocket transport only, compression off.
//
// Environment: PORT (0 = any), REDIS_URL (redis://127.0.0.1:PORT), BENCH_SECRET (HS256 secret).
// Prints "listening <port>" on stdout once it accepts connections.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');
const jwt = require('jsonwebtoken');

const port = Number(process.env.PORT || 0);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const secret = process.env.BENCH_SECRET;
if (!secret || secret.length < 32) {
  console.error('BENCH_SECRET (at least 32 bytes) is required');
  process.exit(64);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on('error', (e) => console.error('redis pub:', e.message));
  sub.on('error', (e) => console.error('redis sub:', e.message));
  await Promise.all([pub.connect(), sub.connect()]);

  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });

  io.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    jwt.verify(token, secret, { algorithms: ['HS256'] }, (err, claims) => {
      if (err) return next(new Error('invalid token'));
      socket.data.user = claims.sub;
      next();
    });
  });

  io.on('connection', (socket) => {
    socket.on('join', (rooms, ack) => {
      socket.join(rooms);
      if (typeof ack === 'function') ack(true);
    });
    socket.on('pub', (room, data) => {
      if (socket.rooms.has(room)) io.to(room).emit('m', data);
    });
  });

  server.listen(port, '127.0.0.1', () => {
    console.log(`listening ${server.address().port}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
