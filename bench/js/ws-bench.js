// Load for bench/workspace-relay.sh (node `ws` from spec/js/node_modules):
//   node ws-bench.js fixture PORT                 a validate endpoint admitting bench tokens
//   node ws-bench.js hold URL N WORKSPACES SECS   opens N clients spread over WORKSPACES scopes,
//                                                 prints "ready N" when all are open, holds SECS
//   node ws-bench.js latency URL RATE SECS        one daemon + one client in a scope; the daemon sends
//                                                 RATE e2ee frames/s for SECS to the client's session;
//                                                 prints received count and p50/p99/max latency (ms)
//   node ws-bench.js floor RATE SECS              the generator's own floor: the same frames sent at
//                                                 RATE for SECS from one of its sockets straight to
//                                                 another (a ws server in this process), no relay;
//                                                 prints the same line
// Tokens are "bench-<role>-<workspace>-<n>"; the fixture turns them into matching claims.
// WS_BENCH_START_MS: latency and floor start that long after the process (default 0), so that the
// caller can set the scheduling of its threads first.
const http = require('http');
const WebSocket = require('ws');

const [mode, ...args] = process.argv.slice(2);
const START_MS = Number(process.env.WS_BENCH_START_MS || 0);

function fixture(port) {
  http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const t = JSON.parse(body).relayToken.split('-'); // bench, role, workspace, n
      const role = t[1] === 'daemon' ? 'workspace-daemon' : 'client';
      const claims = { workspaceId: t[2], runtimeTargetId: 'rt1', role, clientId: `${t[1]}-${t[2]}-${t[3]}`, e2eeProfile: 'noise-ik' };
      if (role === 'client') claims.scope = 'runtime';
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, claims }));
    });
  }).listen(Number(port), '127.0.0.1');
}

function open(base, role, ws, n) {
  const r = role === 'daemon' ? 'workspace-daemon' : 'client';
  return new WebSocket(`${base}?role=${r}&workspaceId=${ws}&runtimeTargetId=rt1`,
    { headers: { authorization: `Bearer bench-${role}-${ws}-${n}` }, perMessageDeflate: false });
}

function hold(base, n, workspaces, secs) {
  let opened = 0, failed = 0, inflight = 0;
  const socks = [], todo = [], tries = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) todo.push(i);
  // A client refused or failed is tried again, 3 times in all: on a loaded machine the fixture
  // can miss the relay's admission timeout, which says nothing about the relay.
  const lost = (i) => { inflight--; if (++tries[i] < 3) todo.push(i); else failed++; more(); };
  const more = () => { // 200 handshakes in flight at most
    while (todo.length && inflight < 200) {
      const i = todo.pop();
      inflight++;
      const ws = open(base, 'client', `ws${i % workspaces}`, i);
      let settled = false; // an error after the open is not a failed handshake
      ws.on('open', () => { settled = true; inflight--; socks.push(ws); if (++opened === n) { console.log(`ready ${opened}`); setTimeout(() => process.exit(0), secs * 1000); } more(); });
      ws.on('error', () => { if (!settled) { settled = true; lost(i); } });
      ws.on('unexpected-response', (req, res) => { console.error(`refused ${res.statusCode}`); if (!settled) { settled = true; lost(i); } req.destroy(); });
    }
    if (opened + failed === n && failed) { console.log(`ready ${opened} (${failed} failed)`); setTimeout(() => process.exit(1), 100); }
  };
  more();
}

// A frame is the e2ee envelope around its send time (ns, process.hrtime.bigint, as decimal text in
// ciphertext), built by concatenation: no JSON.stringify per frame.
const FRAME_HEAD = '{"type":"e2ee","version":2,"profile":"noise-ik","sessionId":"lat-s","epoch":1,"seq":1,' +
  '"iv":"aXY","tag":"dGFn","ciphertext":"';
const frame = (t) => FRAME_HEAD + t + '"}';
const STAMP = Buffer.from('"ciphertext":"');

// The send time in a received e2ee frame, read from its bytes (no string, no JSON.parse, no BigInt
// per frame: the generator's own garbage collections were part of its p99), or -1 if it has none.
function stamp(buf) {
  const at = buf.indexOf(STAMP);
  if (at < 0) return -1;
  let ns = 0;
  for (let i = at + STAMP.length; i < buf.length && buf[i] >= 48 && buf[i] <= 57; i++) ns = ns * 10 + (buf[i] - 48);
  return ns; // exact: hrtime's ns stay far below 2^53 for the life of a machine
}

// The send and receive sides both modes share: pump(ws) sends RATE frames/s for SECS on ws, each
// stamped with its send time; received(m) times one arriving message (one monotonic clock, one
// process). Latencies go into a preallocated array: nothing grows while frames are timed.
function meter(rate, secs) {
  const total = rate * secs, lat = new Float64Array(total);
  let sent = 0, got = 0;
  function report() {
    const l = lat.subarray(0, got).sort();
    const q = (p) => l[Math.min(l.length - 1, Math.floor(p * l.length))].toFixed(3);
    console.log(`sent ${sent} received ${got} p50 ${q(0.5)} ms p99 ${q(0.99)} ms max ${l[l.length - 1].toFixed(3)} ms`);
    process.exit(0);
  }
  return {
    received(m) {
      const t = stamp(m);
      if (t < 0) return JSON.parse(m);
      if (got < total) lat[got++] = (Number(process.hrtime.bigint()) - t) / 1e6;
      return null;
    },
    pump(ws) {
      const t0 = process.hrtime.bigint();
      const tick = setInterval(() => {
        const due = Math.min(total, Math.floor(Number(process.hrtime.bigint() - t0) / 1e9 * rate));
        while (sent < due) { ws.send(frame(String(process.hrtime.bigint()))); sent++; }
        if (sent >= total) { clearInterval(tick); setTimeout(report, 500); }
      }, 1);
    },
  };
}

function latency(base, rate, secs) {
  const d = open(base, 'daemon', 'lat', 0), c = open(base, 'client', 'lat', 1);
  const m = meter(rate, secs);
  d.on('message', (msg) => { // the key exchange init: answer it, then start sending
    const f = JSON.parse(msg);
    d.send(JSON.stringify({ type: 'relay_key_exchange_response', version: 3, profile: 'noise-ik', requestId: f.requestId,
      daemonPublicKey: 'a', daemonEphemeralPublicKey: 'b', encryptedMetadata: 'c', sessionId: 'lat-s', epoch: 1, proof: 'p' }));
  });
  c.on('message', (msg) => { const f = m.received(msg); if (f && f.type === 'relay_key_exchange_response') m.pump(d); });
  let both = 0;
  const ready = () => { if (++both === 2) c.send(JSON.stringify({ type: 'relay_key_exchange_init', version: 3, profile: 'noise-ik',
    requestId: 'lat-r', clientEphemeralPublicKey: 'e', encryptedClientStatic: 's' })); };
  d.on('open', ready); c.on('open', ready);
  for (const w of [d, c]) w.on('unexpected-response', (q, r) => { console.error(`refused ${r.statusCode}`); process.exit(1); });
}

// No relay: the "daemon" is a client socket of a ws server in this process, whose side of the
// connection receives as the client would (one WebSocket hop where the relay path has two).
function floor(rate, secs) {
  const m = meter(rate, secs);
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: false }, () => {
    const d = new WebSocket(`ws://127.0.0.1:${wss.address().port}/`, { perMessageDeflate: false });
    d.on('open', () => m.pump(d));
    d.on('error', (e) => { console.error(`floor: ${e.message}`); process.exit(1); });
  });
  wss.on('connection', (c) => c.on('message', (msg) => m.received(msg)));
}

if (mode === 'fixture') fixture(args[0]);
else if (mode === 'hold') hold(args[0], Number(args[1]), Number(args[2]), Number(args[3]));
else if (mode === 'latency') setTimeout(latency, START_MS, args[0], Number(args[1]), Number(args[2]));
else if (mode === 'floor') setTimeout(floor, START_MS, Number(args[0]), Number(args[1]));
else { console.error('usage: see the top of this file'); process.exit(2); }
