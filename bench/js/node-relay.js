// The minimal Node relay bench/workspace-relay.sh compares against: node `ws` (the original's
// runtime) forwarding frames the way the workspace relay does, and nothing else (no admission,
// no limits): client frames to the scope's daemon, a key exchange makes the client the owner of
// its session, daemon frames go to the owner of their sessionId/requestId only.
//   node node-relay.js PORT
const http = require('http');
const WebSocket = require('ws');

const scopes = new Map();
const scope = (k) => { if (!scopes.has(k)) scopes.set(k, { daemon: null, kex: new Map(), owners: new Map() }); return scopes.get(k); };
const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocket.Server({ server, maxPayload: 1 << 20, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const q = new URL(req.url, 'http://x').searchParams;
  const s = scope(`${q.get('workspaceId')}:${q.get('runtimeTargetId') || ''}`);
  const daemon = q.get('role') === 'workspace-daemon';
  if (daemon) s.daemon = ws;
  ws.on('message', (data) => {
    const text = data.toString();
    let f;
    try { f = JSON.parse(text); } catch (e) { return; }
    if (!daemon) {
      if (f.type === 'relay_key_exchange_init') s.kex.set(f.requestId, ws);
      if (s.daemon) s.daemon.send(text);
      return;
    }
    let owner;
    if (f.type === 'relay_key_exchange_response') { owner = s.kex.get(f.requestId); s.kex.delete(f.requestId); if (owner) s.owners.set(f.sessionId, owner); }
    else owner = s.owners.get(f.sessionId);
    if (owner && owner.readyState === WebSocket.OPEN) owner.send(text);
  });
  ws.on('close', () => { if (s.daemon === ws) s.daemon = null; });
});
server.listen(Number(process.argv[2]), '127.0.0.1');
