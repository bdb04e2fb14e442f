'use strict';
// A minimal Socket.IO signaling relay: the "Socket.IO + @socket.io/redis-adapter"
// peer of bench/. Same semantics as our server's relay, without its
// authentication, validation, rate limiting or room state:
//   handshake query id=<peer id>, room=<room>; the server emits "welcome";
//   "signal" {type, to, payload}: to a peer id -> that peer, else the room;
//   receivers get {type, from, to, payload}.
//   node socketio_relay.js --port P [--host 127.0.0.1] [--redis redis://127.0.0.1:6379]
const http = require('node:http');
const { Server } = require('socket.io');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port || 3000);
const host = args.host || '127.0.0.1';

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, { transports: ['websocket'], serveClient: false });
  if (args.redis) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = createClient({ url: args.redis });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on('connection', (socket) => {
    const id = String(socket.handshake.query.id || socket.id);
    const room = socket.handshake.query.room ? String(socket.handshake.query.room) : '';
    socket.join(`p:${id}`);
    if (room) socket.join(`r:${room}`);
    socket.emit('welcome', { id, room });
    socket.on('signal', (msg) => {
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
      const out = { type: msg.type, from: id, to: msg.to ?? null, payload: msg.payload };
      if (msg.to) io.to(`p:${msg.to}`).emit('signal', out);
      else if (room) socket.to(`r:${room}`).emit('signal', out);
    });
  });
  httpServer.listen(port, host, () => console.log(`socket.io listening on ${host}:${port}${args.redis ? ' (redis adapter)' : ''}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
