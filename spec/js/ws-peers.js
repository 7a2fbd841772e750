// Real peers for the workspace relay specs, driven over a line-based control socket:
//   node ws-peers.js            prints {"control": port, "http": port} and serves both on loopback.
// Control lines (JSON, one per line) and the events that come back (JSON lines):
//   {op:"open", id, url, headers?, protocols?}  -> {ev:"open", id, protocol} | {ev:"unexpected", id, status}
//                                                 | {ev:"error", id, message}
//   {op:"send", id, text} / {op:"send", id, json}   (also {bytes: N} for a frame of N "x")
//   {op:"flood", id, json, count}                 sends count copies at once
//   {op:"close", id, code, reason}  {op:"pause"|"resume", id} (stop/start reading the socket)
//   {op:"quiet", id}  count messages instead of reporting each; {op:"stats", id} -> {ev:"stats", id, count}
//   every message -> {ev:"message", id, text}; every close -> {ev:"close", id, code, reason}
//   {op:"fixture", validate:{token: {status?, body?, claims?, delay_ms?}}, jwks:{...}, key}
//       what the HTTP side answers: POST /api/runtime/internal/relay/validate looks the relayToken
//       up (needs x-relay-internal-key == key), GET /jwks.json returns jwks -> {ev:"fixture"}
//   {op:"requests"} -> {ev:"requests", list:[{path, key, body}]}
//   {op:"jwks", keys:[{kid, pem}]}  serves those public keys (PEM files) as the JWKS -> {ev:"fixture"}
//   {op:"sign", alg, kid?, pem, header?, claims} signs a JWT (RS256, ES256, EdDSA) with a
//       private key PEM file -> {ev:"signed", token}
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const http = require('http');
const WebSocket = require('ws');

const peers = new Map();
let fixture = { validate: {}, jwks: { keys: [] }, key: '' };
const requests = [];
let control = null;

const emit = (o) => { if (control) control.write(JSON.stringify(o) + '\n'); };

function open(c) {
  const ws = new WebSocket(c.url, c.protocols || [], { headers: c.headers || {}, maxPayload: 64 << 20 });
  const p = { ws, quiet: false, count: 0 };
  peers.set(c.id, p);
  ws.on('open', () => emit({ ev: 'open', id: c.id, protocol: ws.protocol }));
  ws.on('unexpected-response', (req, res) => {
    emit({ ev: 'unexpected', id: c.id, status: res.statusCode });
    req.destroy();
  });
  ws.on('message', (data) => {
    p.count++;
    if (!p.quiet) emit({ ev: 'message', id: c.id, text: data.toString() });
  });
  ws.on('close', (code, reason) => emit({ ev: 'close', id: c.id, code, reason: reason.toString() }));
  ws.on('error', (e) => emit({ ev: 'error', id: c.id, message: e.message }));
}

function payload(c) {
  if (c.bytes !== undefined) return 'x'.repeat(c.bytes);
  return c.json !== undefined ? JSON.stringify(c.json) : c.text;
}

const ops = {
  open,
  send: (c) => peers.get(c.id).ws.send(payload(c)),
  flood: (c) => { const s = payload(c); for (let i = 0; i < c.count; i++) peers.get(c.id).ws.send(s); },
  close: (c) => peers.get(c.id).ws.close(c.code, c.reason),
  pause: (c) => peers.get(c.id).ws._socket.pause(),
  resume: (c) => peers.get(c.id).ws._socket.resume(),
  quiet: (c) => { peers.get(c.id).quiet = true; },
  stats: (c) => emit({ ev: 'stats', id: c.id, count: peers.get(c.id).count }),
  fixture: (c) => { fixture = { ...fixture, ...c }; emit({ ev: 'fixture' }); },
  requests: () => emit({ ev: 'requests', list: requests.splice(0) }),
  jwks: (c) => {
    const keys = c.keys.map((k) => ({ ...crypto.createPublicKey(fs.readFileSync(k.pem)).export({ format: 'jwk' }), kid: k.kid, use: 'sig' }));
    fixture = { ...fixture, jwks: { keys } };
    emit({ ev: 'fixture' });
  },
  sign: (c) => {
    const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
    const input = b64({ alg: c.alg, typ: 'JWT', ...(c.kid ? { kid: c.kid } : {}), ...(c.header || {}) }) + '.' + b64(c.claims);
    const key = fs.readFileSync(c.pem);
    const sig = c.alg === 'EdDSA' ? crypto.sign(null, Buffer.from(input), key)
      : crypto.sign('sha256', Buffer.from(input), c.alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
    emit({ ev: 'signed', token: input + '.' + sig.toString('base64url') });
  },
};

// The platform's side of RELAY_BACKPLANE_MODE=server: presence records and a bus with ids.
// fixture.internal_down makes every call fail (503).
const presence = new Map();
const bus = [];
function internal(req, body, json) {
  if (req.headers['x-relay-internal-key'] !== fixture.key) return json(403, { ok: false });
  if (fixture.internal_down) return json(503, { ok: false, reason: 'down' });
  const b = JSON.parse(body || '{}');
  const key = `${b.workspaceId}:${b.runtimeTargetId || ''}`;
  switch (req.url.slice('/api/runtime/internal/relay/'.length)) {
    case 'presence/upsert':
      if (b.daemonConnected) presence.set(key, b); else presence.delete(key);
      return json(200, { ok: true });
    case 'presence/resolve': return json(200, { ok: true, presence: presence.get(key) || null });
    case 'bus/publish': bus.push({ ...b, id: bus.length + 1 }); return json(200, { ok: true });
    case 'bus/pull': {
      const frames = bus.filter((f) => f.id > (b.sinceId || 0) && (!f.targetRelayId || f.targetRelayId === b.relayId));
      return json(200, { ok: true, frames: frames.slice(0, b.limit || 200) });
    }
    default: return json(404, { ok: false });
  }
}

const httpServer = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    requests.push({ path: req.url, key: req.headers['x-relay-internal-key'] || null, body });
    const json = (status, o) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(o)); };
    if (req.url === '/jwks.json') return json(200, fixture.jwks);
    if (req.url.startsWith('/api/runtime/internal/relay/') && !req.url.endsWith('/validate')) return internal(req, body, json);
    if (req.url !== '/api/runtime/internal/relay/validate') return json(404, { ok: false });
    if (req.headers['x-relay-internal-key'] !== fixture.key) return json(403, { ok: false, reason: 'bad key' });
    let t;
    try { t = fixture.validate[JSON.parse(body).relayToken]; } catch (e) { return json(400, { ok: false }); }
    if (!t) return json(401, { ok: false, reason: 'unknown token' });
    const answer = () => {
      if (t.raw !== undefined) { res.writeHead(t.status || 200); return res.end(t.raw); }
      json(t.status || 200, t.body || { ok: true, claims: t.claims });
    };
    if (t.delay_ms) setTimeout(answer, t.delay_ms); else answer();
  });
});

const controlServer = net.createServer((sock) => {
  control = sock;
  let buf = '';
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { const c = JSON.parse(line); ops[c.op](c); } catch (e) { emit({ ev: 'error', message: String(e) }); }
    }
  });
  sock.on('close', () => process.exit(0));
});

httpServer.listen(0, '127.0.0.1', () => controlServer.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ control: controlServer.address().port, http: httpServer.address().port }));
}));
