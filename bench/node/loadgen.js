'use strict';
/*
 * The WebSocket load generator of bench/: one workload, three wire dialects.
 *
 *   node loadgen.js '<json config>'
 *
 * The parent process forks `workers` child processes (each one Node thread,
 * the `ws` client with bufferutil), splits the pairs / rooms / connections
 * between them, and prints one JSON object per line on stdout:
 *
 *   {"event":"measure_start"} ... {"event":"measure_end"}   (relay, fanout)
 *   {"event":"ready","connected":N}                           (idle)
 *   {"event":"result", ...}                                   (always last)
 *
 * so that the orchestrator (bench/__main__.py) can sample the servers' CPU and
 * memory over exactly the measured window.
 *
 * Dialects ("server" in the config):
 *   sbd      ws://H:P/ws/webrtc/{room}?token=T; our PROTOCOL.md frames
 *   peerjs   ws://H:P/peerjs?key=peerjs&id=ID&token=T; {type:"OFFER",dst,payload}
 *   socketio ws://H:P/socket.io/?EIO=4&transport=websocket&id=ID&room=R,
 *            Engine.IO v4 / Socket.IO v5 packets spoken raw over `ws`
 *            (bench/node/socketio_relay.js is the app on the other side)
 *
 * Latency: every hot message carries its send time (performance.now(), ms)
 * inside the SDP string as `@@<ms>|<seq>|<sender>@@`; both ends of a pair, and
 * all members of a fan-out room, live in the same worker, so one clock.
 * Histograms: log buckets of 1 % width, merged in the parent.
 */

const { fork } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const crypto = require('node:crypto');
const WebSocket = require('ws');

const NBUCKETS = 2400; // ln(us) * 100 -> up to e^24 us, far beyond any run

// ---------------------------------------------------------------- histogram

class Hist {
  constructor() {
    this.b = new Float64Array(NBUCKETS);
    this.n = 0;
    this.sum = 0;
    this.max = 0;
  }
  add(ms) {
    const us = ms * 1000;
    const i = us <= 1 ? 0 : Math.min(NBUCKETS - 1, Math.floor(Math.log(us) * 100));
    this.b[i] += 1;
    this.n += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  toJSON() {
    const nz = {};
    for (let i = 0; i < NBUCKETS; i++) if (this.b[i]) nz[i] = this.b[i];
    return { nz, n: this.n, sum: this.sum, max: this.max };
  }
  static merge(parts) {
    const h = new Hist();
    for (const p of parts) {
      for (const [i, c] of Object.entries(p.nz)) h.b[+i] += c;
      h.n += p.n;
      h.sum += p.sum;
      if (p.max > h.max) h.max = p.max;
    }
    return h;
  }
  pct(q) {
    if (!this.n) return null;
    const target = q * this.n;
    let acc = 0;
    for (let i = 0; i < NBUCKETS; i++) {
      acc += this.b[i];
      if (acc >= target) return Math.min(this.max, Math.exp((i + 0.5) / 100) / 1000);
    }
    return this.max;
  }
  summary() {
    return {
      count: this.n,
      mean_ms: this.n ? this.sum / this.n : null,
      p50_ms: this.pct(0.5),
      p90_ms: this.pct(0.9),
      p99_ms: this.pct(0.99),
      p999_ms: this.pct(0.999),
      max_ms: this.n ? this.max : null,
    };
  }
}

// --------------------------------------------------------------- payloads

// A realistic-looking SDP body (audio + video m-lines); `@@...@@` is replaced
// per message by the timestamp marker, and the tail padded to the target size.
const SDP_HEAD =
  'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' +
  'a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n' +
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n' +
  'a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Jq0e\r\na=ice-pwd:4wLr7gXo0G3cKk9c0g9U8n0p\r\n' +
  'a=ice-options:trickle\r\na=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:' +
  'DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\n' +
  'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\na=rtcp-mux\r\n' +
  'a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n' +
  'm=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107\r\nc=IN IP4 0.0.0.0\r\n' +
  'a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Jq0e\r\na=ice-pwd:4wLr7gXo0G3cKk9c0g9U8n0p\r\n' +
  'a=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\n' +
  'a=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\n' +
  'a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n';

/** JSON-escaped SDP text (what goes between the quotes) of about `chars` chars. */
function sdpBody(chars) {
  let s = JSON.stringify(SDP_HEAD).slice(1, -1);
  const pad = 'a=ssrc:1001 cname:bench\\r\\n';
  while (s.length + pad.length <= chars) s += pad;
  return s; // whole lines only: never cut an escape in two
}

function marker(t, seq, who) {
  return `@@${t.toFixed(4)}|${seq}|${who}@@`;
}

/** Parse the marker out of a received frame: [t_ms, seq, who] or null. */
function readMarker(s) {
  const i = s.indexOf('@@');
  if (i < 0) return null;
  const j = s.indexOf('@@', i + 2);
  const parts = s.slice(i + 2, j).split('|');
  return [+parts[0], +parts[1], parts[2]];
}

// ---------------------------------------------------------------- dialects

const DIALECTS = {
  sbd: {
    url(base, c) {
      return `${base}/ws/webrtc/${encodeURIComponent(c.room)}?token=${encodeURIComponent(c.token)}`;
    },
    onControl(c, s) {
      const m = JSON.parse(s);
      if (m.type === 'welcome') {
        c.peerId = m.payload.peer_id;
        for (const p of m.payload.participants) c.others.add(p.peer_id);
        c.welcomed();
      } else if (m.type === 'user-joined') {
        c.others.add(m.payload.peer_id);
        c.changed();
      } else if (m.type === 'user-left') {
        c.others.delete(m.payload.peer_id);
      } else if (m.type === 'error') {
        c.errors += 1;
        if (c.errors <= 3) c.log(`error frame: ${s.slice(0, 200)}`);
      }
    },
    unicast(kind, to, body) {
      return `{"type":"${kind}","to":"${to}","payload":{"type":"${kind}","sdp":"${body}"}}`;
    },
    broadcast(body) {
      return `{"type":"app","payload":{"data":"${body}"}}`;
    },
  },
  peerjs: {
    url(base, c) {
      return `${base}/peerjs?key=peerjs&id=${c.peerId}&token=${c.secret}`;
    },
    onControl(c, s) {
      const m = JSON.parse(s);
      if (m.type === 'OPEN') c.welcomed();
      else if (m.type === 'ERROR' || m.type === 'ID-TAKEN') {
        c.errors += 1;
        c.log(`error frame: ${s.slice(0, 200)}`);
      }
    },
    unicast(kind, to, body) {
      const t = kind === 'offer' ? 'OFFER' : 'ANSWER';
      return `{"type":"${t}","dst":"${to}","payload":{"type":"${kind}","sdp":"${body}"}}`;
    },
    broadcast: null, // PeerJS has no rooms
  },
  socketio: {
    url(base, c) {
      return `${base}/socket.io/?EIO=4&transport=websocket&id=${c.peerId}&room=${encodeURIComponent(c.room)}`;
    },
    onControl(c, s) {
      const k = s.charCodeAt(0);
      if (k === 50 /* '2' ping */) {
        c.ws.send('3');
      } else if (k === 48 /* '0' open */) {
        c.ws.send('40');
      } else if (s.startsWith('42')) {
        const [ev, data] = JSON.parse(s.slice(2));
        if (ev === 'welcome') c.welcomed();
        else if (ev === 'error') c.errors += 1;
        void data;
      } else if (s.startsWith('44')) {
        c.errors += 1;
        c.log(`connect_error: ${s.slice(0, 200)}`);
      }
    },
    unicast(kind, to, body) {
      return `42["signal",{"type":"${kind}","to":"${to}","payload":{"type":"${kind}","sdp":"${body}"}}]`;
    },
    broadcast(body) {
      return `42["signal",{"type":"app","payload":{"data":"${body}"}}]`;
    },
  },
};

// ---------------------------------------------------------------- a client

class Client {
  constructor(w, opts) {
    this.w = w;
    this.dialect = DIALECTS[w.cfg.server];
    this.base = opts.base;
    this.room = opts.room || '';
    this.token = opts.token || '';
    this.peerId = opts.peerId || '';
    this.secret = crypto.randomBytes(6).toString('hex');
    this.others = new Set();
    this.errors = 0;
    this.onHot = null;
    this.onWelcome = null;
    this.onChange = null;
    this.tStart = 0;
    this.tWelcome = 0;
    this.closed = false;
  }
  log(s) {
    this.w.log(s);
  }
  open() {
    this.tStart = performance.now();
    const ws = new WebSocket(this.dialect.url(this.base, this), {
      perMessageDeflate: this.w.cfg.deflate !== false,
      skipUTF8Validation: true,
      maxPayload: 16 * 1024 * 1024,
      handshakeTimeout: 30000,
    });
    this.ws = ws;
    ws.on('message', (data) => {
      const s = data.toString();
      if (s.indexOf('@@') >= 0 && this.onHot) this.onHot(s);
      else this.dialect.onControl(this, s);
    });
    ws.on('error', (e) => {
      this.errors += 1;
      this.w.connErrors += 1;
      if (this.w.connErrors <= 3) this.log(`socket error: ${e.message}`);
    });
    ws.on('close', (code) => {
      this.closed = true;
      if (!this.w.closing) {
        this.w.unexpectedCloses += 1;
        if (this.w.unexpectedCloses <= 3) this.log(`closed by server: ${code}`);
      }
    });
  }
  welcomed() {
    if (!this.tWelcome) this.tWelcome = performance.now();
    if (this.onWelcome) this.onWelcome(this);
  }
  changed() {
    if (this.onChange) this.onChange(this);
  }
  send(s) {
    if (this.ws.readyState === 1) this.ws.send(s);
  }
  close() {
    try {
      this.ws.close(1000);
    } catch {
      /* already gone */
    }
  }
}

// ---------------------------------------------------------------- a worker

class Worker {
  constructor(cfg, share) {
    this.cfg = cfg;
    this.share = share; // {index, items: [...]}
    this.hist = new Hist();
    this.count = 0; // hot messages received while measuring
    this.sent = 0;
    this.connErrors = 0;
    this.unexpectedCloses = 0;
    this.measuring = false;
    this.running = false;
    this.closing = false;
    this.clients = [];
    this.body = sdpBody(cfg.sdp_chars || 1400);
  }
  log(s) {
    process.send({ kind: 'log', text: `[w${this.share.index}] ${s}` });
  }
  base(i) {
    const urls = this.cfg.urls;
    return urls[i % urls.length];
  }
  token(i) {
    const t = this.cfg.tokens || [''];
    return t[i % t.length];
  }

  /** Open `n` clients with at most `conc` handshakes in flight, each made by `make(i)`. */
  openMany(n, conc, make) {
    return new Promise((resolve) => {
      let next = 0;
      let done = 0;
      const launch = () => {
        if (next >= n) return;
        const c = make(next++);
        this.clients.push(c);
        let finished = false;
        const finish = () => {
          if (finished) return;
          finished = true;
          done += 1;
          if (done === n) resolve();
          else launch();
        };
        const prev = c.onWelcome;
        c.onWelcome = (cl) => {
          if (prev) prev(cl);
          finish();
        };
        c.open();
        c.ws.on('close', finish);
      };
      if (n === 0) resolve();
      for (let k = 0; k < Math.min(conc, n); k++) launch();
    });
  }

  // --- relay: pairs ping-ponging offers / answers ---------------------------

  async setupRelay() {
    const cfg = this.cfg;
    const pairs = this.share.items; // global pair indexes
    this.pairs = [];
    const mk = [];
    for (const p of pairs) {
      const room = `bench-${cfg.run_id}-p${p}`;
      const a = new Client(this, { base: this.base(0), room, token: this.token(2 * p), peerId: `a${p}x${cfg.run_id}` });
      const b = new Client(this, { base: this.base(1), room, token: this.token(2 * p + 1), peerId: `b${p}x${cfg.run_id}` });
      this.pairs.push({ a, b, p });
      mk.push(a, b);
    }
    // A first (so that B finds A in its welcome), then B.
    const as = this.pairs.map((x) => x.a);
    const bs = this.pairs.map((x) => x.b);
    await this.openMany(as.length, cfg.connect_concurrency || 64, (i) => as[i]);
    await this.openMany(bs.length, cfg.connect_concurrency || 64, (i) => bs[i]);
    // Learn each other's ids (sbd assigns them; the others are chosen here).
    const deadline = performance.now() + 10000;
    for (const x of this.pairs) {
      if (this.cfg.server === 'sbd') {
        while (!x.a.others.size || !x.b.others.size) {
          if (performance.now() > deadline) throw new Error('peers never saw each other');
          await sleep(5);
        }
      }
      x.aTo = x.b.peerId;
      x.bTo = x.a.peerId;
    }
    const uni = this.dialect().unicast;
    const body = this.body;
    const prefixLen = body.indexOf('\\r\\n');
    const head = body.slice(0, prefixLen);
    const tail = body.slice(prefixLen);
    const frame = (kind, to, seq, who) => {
      const t = performance.now();
      return uni(kind, to, `${head} ${marker(t, seq, who)}${tail}`);
    };
    this.frame = frame;
    for (const x of this.pairs) {
      x.seq = 0;
      x.a.onHot = (s) => {
        const mk2 = readMarker(s);
        this.record(mk2[0]);
        if (this.running && !this.openLoop) {
          this.sent += 1;
          x.a.send(frame('offer', x.aTo, ++x.seq, 'a'));
        }
      };
      x.b.onHot = (s) => {
        const mk2 = readMarker(s);
        this.record(mk2[0]);
        if (this.running) {
          this.sent += 1;
          x.b.send(frame('answer', x.bTo, mk2[1], 'b'));
        }
      };
    }
  }

  dialect() {
    return DIALECTS[this.cfg.server];
  }

  record(t0) {
    if (!this.measuring) return;
    this.hist.add(performance.now() - t0);
    this.count += 1;
  }

  startRelay() {
    this.running = true;
    const inflight = this.cfg.inflight || 1;
    const rate = this.cfg.rate_per_pair || 0; // offers/s per pair (open loop)
    if (!rate) {
      for (const x of this.pairs) {
        for (let k = 0; k < inflight; k++) {
          this.sent += 1;
          x.a.send(this.frame('offer', x.aTo, ++x.seq, 'a'));
        }
      }
      return;
    }
    this.openLoop = true;
    const t0 = performance.now();
    // Stagger the pairs over one period so that the offers do not come in bursts.
    const period = 1000 / rate;
    this.pairs.forEach((x, i) => {
      x.due0 = t0 + (period * i) / this.pairs.length;
      x.sentOffers = 0;
    });
    const tick = () => {
      if (!this.running) return;
      const now = performance.now();
      for (const x of this.pairs) {
        const due = Math.floor((now - x.due0) / period) + 1;
        let n = due - x.sentOffers;
        if (n > 50) {
          this.lagged = (this.lagged || 0) + (n - 50);
          x.sentOffers += n - 50;
          n = 50;
        }
        for (; n > 0; n--) {
          x.sentOffers += 1;
          this.sent += 1;
          x.a.send(this.frame('offer', x.aTo, ++x.seq, 'a'));
        }
      }
      setTimeout(tick, 1);
    };
    tick();
  }

  // --- fan-out: rooms of `room_size`, every member broadcasting closed-loop --

  async setupFanout() {
    const cfg = this.cfg;
    const size = cfg.room_size;
    this.rooms = [];
    for (const r of this.share.items) {
      const room = { id: `bench-${cfg.run_id}-f${r}`, members: [] };
      for (let m = 0; m < size; m++) {
        const c = new Client(this, {
          base: this.base(m),
          room: room.id,
          token: this.token(r * size + m),
          peerId: `f${r}m${m}x${cfg.run_id}`,
        });
        c.idx = m;
        room.members.push(c);
      }
      this.rooms.push(room);
    }
    const all = this.rooms.flatMap((r) => r.members);
    await this.openMany(all.length, cfg.connect_concurrency || 64, (i) => all[i]);
    const bcast = this.dialect().broadcast;
    const body = this.body;
    const cut = body.indexOf('\\r\\n');
    const head = body.slice(0, cut);
    const tail = body.slice(cut);
    await sleep(300); // let the user-joined announcements settle
    for (const room of this.rooms) {
      room.pending = new Array(size).fill(0);
      room.seq = new Array(size).fill(0);
      for (const c of room.members) {
        c.onHot = (s) => {
          const [t0, seq, who] = readMarker(s);
          this.record(t0);
          const from = +who;
          if (seq !== room.seq[from]) return; // a late copy from before a reset
          room.pending[from] -= 1;
          if (room.pending[from] === 0 && this.running) this.broadcastFrom(room, from);
        };
      }
    }
    this.bframe = (seq, who) => bcast(`${head} ${marker(performance.now(), seq, who)}${tail}`);
  }

  broadcastFrom(room, m) {
    room.seq[m] += 1;
    room.pending[m] = room.members.length - 1;
    this.sent += 1;
    room.members[m].send(this.bframe(room.seq[m], m));
  }

  startFanout() {
    this.running = true;
    for (const room of this.rooms) for (let m = 0; m < room.members.length; m++) this.broadcastFrom(room, m);
  }

  // --- join storm ----------------------------------------------------------

  async runJoins() {
    const cfg = this.cfg;
    const items = this.share.items; // global join indexes
    const rate = cfg.join_rate_per_worker || 0; // joins/s (open loop), 0: as fast as `concurrency`
    const hist = new Hist();
    let ok = 0;
    let failed = 0;
    const mkClient = (g) =>
      new Client(this, {
        base: this.base(g),
        room: `bench-${cfg.run_id}-j${Math.floor(g / cfg.room_size)}`,
        token: this.token(g),
        peerId: `j${g}x${cfg.run_id}`,
      });
    const t0 = performance.now();
    let tLast = t0;
    await new Promise((resolve) => {
      let launched = 0;
      let settled = 0;
      let inflight = 0;
      const settle = (c, good) => {
        if (c.settled) return;
        c.settled = true;
        settled += 1;
        inflight -= 1;
        if (good) {
          ok += 1;
          hist.add(c.tWelcome - c.tStart);
          tLast = performance.now();
        } else failed += 1;
        if (settled === items.length) resolve();
        else if (!rate) launchOne();
      };
      const launchOne = () => {
        if (launched >= items.length) return;
        const c = mkClient(items[launched++]);
        inflight += 1;
        c.onWelcome = () => settle(c, true);
        this.clients.push(c);
        c.open();
        c.ws.on('close', () => settle(c, false));
        c.ws.on('error', () => settle(c, false));
      };
      if (!rate) {
        for (let k = 0; k < Math.min(cfg.concurrency || 32, items.length); k++) launchOne();
        return;
      }
      const period = 1000 / rate;
      const tick = () => {
        const due = Math.min(items.length, Math.floor((performance.now() - t0) / period) + 1);
        while (launched < due) launchOne();
        if (launched < items.length) setTimeout(tick, Math.max(0, Math.min(period, 2)));
      };
      tick();
      setTimeout(resolve, (cfg.max_s || 60) * 1000);
    });
    return { hist: hist.toJSON(), ok, failed, t_first: t0, span_ms: tLast - t0 };
  }

  // --- idle ------------------------------------------------------------------

  async openIdle() {
    const cfg = this.cfg;
    const items = this.share.items;
    const clients = items.map(
      (g) =>
        new Client(this, {
          base: this.base(g),
          room: `bench-${cfg.run_id}-i${Math.floor(g / cfg.room_size)}`,
          token: this.token(g),
          peerId: `i${g}x${cfg.run_id}`,
        }),
    );
    await this.openMany(clients.length, cfg.connect_concurrency || 64, (i) => clients[i]);
    return clients.filter((c) => c.tWelcome && !c.closed).length;
  }

  async closeAll() {
    this.closing = true;
    this.running = false;
    for (const c of this.clients) c.close();
    const deadline = performance.now() + 5000;
    while (this.clients.some((c) => !c.closed) && performance.now() < deadline) await sleep(20);
    for (const c of this.clients) if (!c.closed) c.ws.terminate();
  }

  stats() {
    return {
      hist: this.hist.toJSON(),
      count: this.count,
      sent: this.sent,
      conn_errors: this.connErrors,
      unexpected_closes: this.unexpectedCloses,
      frame_errors: this.clients.reduce((a, c) => a + c.errors, 0),
      lagged: this.lagged || 0,
      cpu: process.cpuUsage(),
      rss: process.memoryUsage().rss,
    };
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- worker main

function workerMain() {
  let w = null;
  process.on('message', async (msg) => {
    try {
      if (msg.kind === 'init') {
        w = new Worker(msg.cfg, msg.share);
        const sc = msg.cfg.scenario;
        if (sc === 'relay') await w.setupRelay();
        else if (sc === 'fanout') await w.setupFanout();
        process.send({ kind: 'ready' });
      } else if (msg.kind === 'start') {
        if (w.cfg.scenario === 'relay') w.startRelay();
        else w.startFanout();
        process.send({ kind: 'started' });
      } else if (msg.kind === 'measure') {
        w.hist = new Hist();
        w.count = 0;
        w.sent = 0;
        w.cpu0 = process.cpuUsage();
        w.measuring = true;
        process.send({ kind: 'measuring' });
      } else if (msg.kind === 'stop') {
        w.measuring = false;
        const cpu = process.cpuUsage(w.cpu0);
        const st = w.stats();
        st.cpu = cpu;
        w.running = false;
        process.send({ kind: 'stats', stats: st });
      } else if (msg.kind === 'joins') {
        const cpu0 = process.cpuUsage();
        const r = await w.runJoins();
        r.cpu = process.cpuUsage(cpu0);
        r.conn_errors = w.connErrors;
        process.send({ kind: 'joins', result: r });
      } else if (msg.kind === 'idle') {
        const n = await w.openIdle();
        process.send({ kind: 'idle', connected: n, rss: process.memoryUsage().rss, conn_errors: w.connErrors });
      } else if (msg.kind === 'close') {
        await w.closeAll();
        process.send({ kind: 'closed', unexpected_closes: w.unexpectedCloses });
      }
    } catch (e) {
      process.send({ kind: 'fatal', error: String(e && e.stack ? e.stack : e) });
    }
  });
}

// ---------------------------------------------------------------- parent main

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function parentMain(cfg) {
  const nw = Math.max(1, cfg.workers || 1);
  const units =
    cfg.scenario === 'relay'
      ? cfg.pairs
      : cfg.scenario === 'fanout'
        ? cfg.rooms
        : cfg.scenario === 'join'
          ? cfg.joins
          : cfg.conns;
  const shares = Array.from({ length: nw }, (_, i) => ({ index: i, items: [] }));
  for (let u = 0; u < units; u++) shares[u % nw].items.push(u);
  const workers = [];
  const waiters = new Map();
  const expect = (child, kind) =>
    new Promise((resolve, reject) => {
      waiters.set(`${child.pid}:${kind}`, { resolve, reject });
    });
  const all = (kind) => Promise.all(workers.map((c) => expect(c, kind)));
  const fatal = [];
  for (let i = 0; i < nw; i++) {
    const child = fork(__filename, [], { env: { ...process.env, LOADGEN_WORKER: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m) => {
      if (m.kind === 'log') {
        process.stderr.write(m.text + '\n');
        return;
      }
      if (m.kind === 'fatal') {
        fatal.push(m.error);
        process.stderr.write(`worker fatal: ${m.error}\n`);
        for (const [k, w] of waiters) {
          if (k.startsWith(`${child.pid}:`)) w.reject(new Error(m.error));
        }
        return;
      }
      const w = waiters.get(`${child.pid}:${m.kind}`);
      if (w) {
        waiters.delete(`${child.pid}:${m.kind}`);
        w.resolve(m);
      }
    });
    workers.push(child);
  }
  const cfgFor = (i) => {
    const c = { ...cfg };
    if (cfg.scenario === 'relay' && cfg.rate) c.rate_per_pair = cfg.rate / 2 / cfg.pairs;
    if (cfg.scenario === 'join' && cfg.join_rate) c.join_rate_per_worker = cfg.join_rate / nw;
    return c;
  };
  const parentCpu0 = process.cpuUsage();
  const result = { event: 'result', scenario: cfg.scenario, server: cfg.server, workers: nw };
  const hardStop = setTimeout(() => {
    process.stderr.write('loadgen: hard time limit reached\n');
    for (const w of workers) w.kill('SIGKILL');
    process.exit(3);
  }, (cfg.hard_limit_s || 180) * 1000);
  try {
    const ready = all('ready');
    workers.forEach((c, i) => c.send({ kind: 'init', cfg: cfgFor(i), share: shares[i] }));
    await ready;
    if (cfg.scenario === 'relay' || cfg.scenario === 'fanout') {
      let p = all('started');
      workers.forEach((c) => c.send({ kind: 'start' }));
      await p;
      await sleep((cfg.warmup_s ?? 2) * 1000);
      p = all('measuring');
      workers.forEach((c) => c.send({ kind: 'measure' }));
      await p;
      const tm0 = performance.now();
      emit({ event: 'measure_start' });
      await sleep(cfg.duration_s * 1000);
      p = all('stats');
      workers.forEach((c) => c.send({ kind: 'stop' }));
      const stats = (await p).map((m) => m.stats);
      const elapsed = (performance.now() - tm0) / 1000;
      emit({ event: 'measure_end' });
      const h = Hist.merge(stats.map((s) => s.hist));
      const count = stats.reduce((a, s) => a + s.count, 0);
      const sent = stats.reduce((a, s) => a + s.sent, 0);
      Object.assign(result, {
        elapsed_s: elapsed,
        delivered: count,
        sent,
        per_s: count / elapsed,
        sent_per_s: sent / elapsed,
        latency: h.summary(),
        conn_errors: stats.reduce((a, s) => a + s.conn_errors, 0),
        unexpected_closes: stats.reduce((a, s) => a + s.unexpected_closes, 0),
        frame_errors: stats.reduce((a, s) => a + s.frame_errors, 0),
        lagged: stats.reduce((a, s) => a + s.lagged, 0),
        loadgen_cpu_pct: (100 * stats.reduce((a, s) => a + (s.cpu.user + s.cpu.system) / 1e6, 0)) / elapsed,
        loadgen_worker_cpu_pct: stats.map((s) => (100 * (s.cpu.user + s.cpu.system)) / 1e6 / elapsed),
      });
    } else if (cfg.scenario === 'join') {
      const p = all('joins');
      const t0 = performance.now();
      workers.forEach((c) => c.send({ kind: 'joins' }));
      const rs = (await p).map((m) => m.result);
      const elapsed = (performance.now() - t0) / 1000;
      const h = Hist.merge(rs.map((r) => r.hist));
      const ok = rs.reduce((a, r) => a + r.ok, 0);
      const span = Math.max(...rs.map((r) => r.span_ms)) / 1000;
      Object.assign(result, {
        ok,
        failed: rs.reduce((a, r) => a + r.failed, 0),
        joins_per_s: ok / span,
        elapsed_s: elapsed,
        latency: h.summary(),
        conn_errors: rs.reduce((a, r) => a + r.conn_errors, 0),
        loadgen_cpu_pct: (100 * rs.reduce((a, r) => a + (r.cpu.user + r.cpu.system) / 1e6, 0)) / elapsed,
      });
    } else if (cfg.scenario === 'idle') {
      const p = all('idle');
      const t0 = performance.now();
      workers.forEach((c) => c.send({ kind: 'idle' }));
      const rs = await p;
      const connected = rs.reduce((a, r) => a + r.connected, 0);
      result.connected = connected;
      result.connect_s = (performance.now() - t0) / 1000;
      result.conn_errors = rs.reduce((a, r) => a + r.conn_errors, 0);
      result.loadgen_rss_mb = rs.reduce((a, r) => a + r.rss, 0) / 2 ** 20;
      emit({ event: 'ready', connected });
      await sleep((cfg.hold_s || 5) * 1000);
    }
    const p = all('closed');
    workers.forEach((c) => c.send({ kind: 'close' }));
    const closed = await p;
    if (cfg.scenario === 'idle') result.unexpected_closes = closed.reduce((a, m) => a + m.unexpected_closes, 0);
  } catch (e) {
    result.error = String(e && e.message ? e.message : e);
  } finally {
    clearTimeout(hardStop);
    const pc = process.cpuUsage(parentCpu0);
    result.loadgen_parent_cpu_s = (pc.user + pc.system) / 1e6;
    if (fatal.length) result.error = fatal[0].split('\n')[0];
    emit(result);
    for (const w of workers) w.kill();
  }
}

if (process.env.LOADGEN_WORKER) {
  workerMain();
} else {
  const cfg = JSON.parse(process.argv[2] || '{}');
  parentMain(cfg).then(() => process.exit(0));
}
