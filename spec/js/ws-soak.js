// A WebSocket session held through a soak: sends a numbered message every INTERVAL ms and
// expects each echoed back in order, until STOP_FILE exists. Prints {sent, echoed, dropped, error}.
//   node ws-soak.js URL STOP_FILE [INTERVAL]
const fs = require('fs');
const WebSocket = require('ws');
const [url, stopFile, interval] = process.argv.slice(2);
const out = { sent: 0, echoed: 0, dropped: false, error: null, close: null };
const ws = new WebSocket(url);
let timer;
const done = () => { clearInterval(timer); console.log(JSON.stringify(out)); process.exit(0); };
ws.on('open', () => {
  timer = setInterval(() => {
    if (fs.existsSync(stopFile)) { ws.close(1000, 'soak over'); return; }
    ws.send('n' + out.sent++);
  }, Number(interval || 50));
});
ws.on('message', (data) => {
  const t = data.toString();
  if (t.startsWith('{')) return; // the server's hello
  if (t === 'n' + out.echoed) out.echoed++;
  else { out.error = 'out of order: ' + t; }
});
ws.on('close', (code, reason) => {
  out.close = { code, reason: reason.toString() };
  if (!fs.existsSync(stopFile)) out.dropped = true;
  done();
});
ws.on('error', (e) => { out.error = e.message; });
