// uWebSockets.js peer for plaza-bench: the job of a Plaza edge with the in-memory backend, the
// way a uWS user would write it. It speaks the subset of Plaza's JSON protocol the bench uses:
//   {"id":N,"op":"connect","token":JWT}      HS256 JWT (signature and exp checked) → {"id":N,"ok":{}}
//   {"id":N,"op":"subscribe","room":R}       → ws.subscribe(R), {"id":N,"ok":{}}
//   {"id":N,"op":"publish","room":R,"data":D} → app.publish(R, {"push":"pub","room":R,"data":D})
//                                              to every subscriber (sender included), {"id":N,"ok":{}}
// Commands other than connect are refused before it. No compression, 16 KiB max message,
// 1 MiB backpressure limit per connection (closed beyond it), pings every ~2 min of idleness.
//
// Environment: PORT (0 = any), BENCH_SECRET (HS256 secret).
// Prints "listening <port> native <binary>" once it accepts connections; exits with status 70
// if uWS's JavaScript fallback (not the native module) was loaded.
'use strict';

const crypto = require('node:crypto');
const uWS = require('@trufflesuite/uws-js-unofficial');

const native = Object.keys(require.cache).find((k) => /uws_[^/]*\.node$/.test(k));
if (!native) {
  console.error('uWebSockets.js native module not loaded (JavaScript fallback): refusing to run');
  process.exit(70);
}

const port = Number(process.env.PORT || 0);
const secret = process.env.BENCH_SECRET;
if (!secret || secret.length < 32) {
  console.error('BENCH_SECRET (at least 32 bytes) is required');
  process.exit(64);
}
const key = Buffer.from(secret);

function verify(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const mac = crypto.createHmac('sha256', key).update(parts[0] + '.' + parts[1]).digest();
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== mac.length || !crypto.timingSafeEqual(sig, mac)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    if (header.alg !== 'HS256') return null;
    if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return null;
    return claims;
  } catch (_) {
    return null;
  }
}

const decoder = new TextDecoder();
const reply = (ws, id) => ws.send(`{"id":${Number(id) || 0},"ok":{}}`);
const refuse = (ws, id, code, message) =>
  ws.send(JSON.stringify({ id: Number(id) || 0, error: { code, message } }));

const app = uWS.App();
app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024,
  maxBackpressure: 1024 * 1024,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
  sendPingsAutomatically: true,
  open: (ws) => {
    ws.getUserData().user = null;
  },
  message: (ws, message, isBinary) => {
    if (isBinary) return ws.end(4400, 'binary frames are not supported');
    let cmd;
    try {
      cmd = JSON.parse(decoder.decode(message));
    } catch (_) {
      return ws.end(4400, 'not JSON');
    }
    const data = ws.getUserData();
    if (cmd.op === 'connect') {
      const claims = verify(cmd.token);
      if (!claims) {
        refuse(ws, cmd.id, 101, 'invalid token');
        return ws.end(4001, 'invalid token');
      }
      data.user = claims.sub;
      return reply(ws, cmd.id);
    }
    if (data.user === null) return refuse(ws, cmd.id, 104, 'connect first');
    if (typeof cmd.room !== 'string' || cmd.room.length === 0 || cmd.room.length > 200) {
      return refuse(ws, cmd.id, 100, 'bad room');
    }
    if (cmd.op === 'subscribe') {
      ws.subscribe(cmd.room);
      return reply(ws, cmd.id);
    }
    if (cmd.op === 'publish') {
      if (!ws.isSubscribed(cmd.room)) return refuse(ws, cmd.id, 103, 'not subscribed');
      app.publish(cmd.room, JSON.stringify({ push: 'pub', room: cmd.room, data: cmd.data }));
      return reply(ws, cmd.id);
    }
    return refuse(ws, cmd.id, 100, 'unknown op');
  },
});

app.listen('127.0.0.1', port, (listenSocket) => {
  if (!listenSocket) {
    console.error(`cannot listen on port ${port}`);
    process.exit(1);
  }
  console.log(`listening ${uWS.us_socket_local_port(listenSocket)} native ${native}`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
