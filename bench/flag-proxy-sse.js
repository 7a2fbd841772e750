// SSE load for bench/flag-proxy.sh (node core modules only).
//   node flag-proxy-sse.js idle   PORT TOKEN KEY N                 open N streams, print "connected N",
//                                                                  hold them until stdin closes
//   node flag-proxy-sse.js fanout PORT TOKEN KEY N PID FILE FLAG   open N streams, change FLAG's default
//                                                                  in FILE, SIGHUP PID, print the ms until
//                                                                  every stream had the event
const http = require('http');
const fs = require('fs');

const [mode, port, token, key, nStr, pid, file, flag] = process.argv.slice(2);
const n = Number(nStr);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
let connected = 0, got = 0, t0 = 0, failed = 0;

function open() {
  const req = http.get({ host: '127.0.0.1', port, path: '/stream?cluster=1', agent,
    headers: { Authorization: `Bearer ${token}`, 'API-Key': key, Accept: 'text/event-stream' } }, (res) => {
    if (res.statusCode !== 200) { failed++; res.resume(); return; }
    let first = true;
    res.on('data', (chunk) => {
      if (first) { first = false; if (++connected === n) allConnected(); return; }
      if (t0 && chunk.toString().startsWith('event:')) {
        if (++got === n) { console.log(`fanout ${n} ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`); process.exit(0); }
      }
    });
  });
  req.on('error', () => { failed++; });
}

function allConnected() {
  console.log(`connected ${n}`);
  if (mode === 'idle') { process.stdin.on('end', () => process.exit(0)); process.stdin.resume(); return; }
  const flags = JSON.parse(fs.readFileSync(file, 'utf8'));
  for (const f of flags) if (f.feature === flag) f.defaultServe.variation = f.defaultServe.variation === 'beta' ? 'welcome' : 'beta';
  fs.writeFileSync(file, JSON.stringify(flags));
  t0 = process.hrtime.bigint();
  process.kill(Number(pid), 'SIGHUP');
  setTimeout(() => { console.log(`fanout ${n}: only ${got} streams had the event after 30 s`); process.exit(1); }, 30000);
}

// open in batches so the listen backlog keeps up
let opened = 0;
(function batch() {
  for (let i = 0; i < 500 && opened < n; i++, opened++) open();
  if (opened < n) setTimeout(batch, 20);
})();
setTimeout(() => { if (connected < n) { console.log(`connected only ${connected} of ${n} (${failed} failed)`); process.exit(1); } }, 120000);
