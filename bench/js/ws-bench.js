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
const http = require('http');
const WebSocket = require('ws');

const [mode, ...args] = process.argv.slice(2);

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
  let opened = 0, failed = 0, next = 0;
  const socks = [];
  const more = () => { // 200 handshakes in flight at most
    while (next < n && next - opened - failed < 200) {
      const i = next++;
      const ws = open(base, 'client', `ws${i % workspaces}`, i);
      socks.push(ws);
      ws.on('open', () => { if (++opened === n) { console.log(`ready ${opened}`); setTimeout(() => process.exit(0), secs * 1000); } more(); });
      ws.on('error', () => { failed++; more(); });
      ws.on('unexpected-response', (req, res) => { failed++; console.error(`refused ${res.statusCode}`); more(); });
    }
    if (opened + failed === n && failed) { console.log(`ready ${opened} (${failed} failed)`); setTimeout(() => process.exit(1), 100); }
  };
  more();
}

const frame = (t) => JSON.stringify({ type: 'e2ee', version: 2, profile: 'noise-ik', sessionId: 'lat-s', epoch: 1, seq: 1,
  iv: 'aXY', tag: 'dGFn', ciphertext: t });

// The send and receive sides both modes share: pump(ws) sends RATE frames/s for SECS on ws, each
// stamped with its send time; received(m) times one arriving message.
function meter(rate, secs) {
  const lat = [];
  let sent = 0;
  function report() {
    lat.sort((a, b) => a - b);
    const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(3);
    console.log(`sent ${sent} received ${lat.length} p50 ${q(0.5)} ms p99 ${q(0.99)} ms max ${lat[lat.length - 1].toFixed(3)} ms`);
    process.exit(0);
  }
  return {
    received(m) {
      const f = JSON.parse(m);
      if (f.type === 'e2ee') lat.push(Number(process.hrtime.bigint() - BigInt(f.ciphertext)) / 1e6);
      return f;
    },
    pump(ws) {
      const t0 = process.hrtime.bigint(), total = rate * secs;
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
  c.on('message', (msg) => { if (m.received(msg).type === 'relay_key_exchange_response') m.pump(d); });
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
else if (mode === 'latency') latency(args[0], Number(args[1]), Number(args[2]));
else if (mode === 'floor') floor(Number(args[0]), Number(args[1]));
else { console.error('usage: see the top of this file'); process.exit(2); }
