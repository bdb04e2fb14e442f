'use strict';
// The PeerJS server (npm `peer`) as its users run it: one Node process.
//   node peerjs_server.js --port P [--host 127.0.0.1]
// Only the limits a 10,000-connection benchmark would hit are raised.
const { PeerServer } = require('peer');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port || 9000);
const host = args.host || '127.0.0.1';
PeerServer(
  {
    port,
    host,
    path: '/',
    key: 'peerjs',
    concurrent_limit: 1_000_000, // default 5,000
    alive_timeout: 3_600_000, // the bench's clients send no HEARTBEAT
    allow_discovery: false,
  },
  () => console.log(`peerjs listening on ${host}:${port}`),
);
