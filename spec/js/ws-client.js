// A real WebSocket client for the specs (node `ws`): node ws-client.js URL SCRIPT_JSON
// SCRIPT_JSON: {"protocols": [...], "send": [{"text": "..."} | {"binary_len": N} | {"close": [code, reason]}],
//               "wait": N (messages to receive before sending the next step), "timeout_ms": N}
// Prints one JSON object: {opened, protocol, messages: [{text}|{binary_len}], close: {code, reason}, error}
const WebSocket = require('ws');
const [url, scriptJson] = process.argv.slice(2);
const script = JSON.parse(scriptJson || '{}');
const out = { opened: false, protocol: null, messages: [], close: null, error: null };
const ws = new WebSocket(url, script.protocols || [], { rejectUnauthorized: false });
let step = 0;
const send = () => {
  while (step < (script.send || []).length) {
    const s = script.send[step++];
    if (s.text !== undefined) ws.send(s.text);
    else if (s.binary_len !== undefined) ws.send(Buffer.alloc(s.binary_len, 7), { binary: true });
    else if (s.fragments) s.fragments.forEach((f, i) => ws.send(f, { fin: i === s.fragments.length - 1 }));
    else if (s.close) { ws.close(s.close[0], s.close[1]); return; }
    if (s.wait) return;
  }
};
const done = () => { console.log(JSON.stringify(out)); process.exit(0); };
setTimeout(() => { out.error = out.error || 'timeout'; done(); }, script.timeout_ms || 5000);
ws.on('open', () => { out.opened = true; out.protocol = ws.protocol; send(); });
ws.on('message', (data, isBinary) => {
  out.messages.push(isBinary ? { binary_len: data.length } : { text: data.toString() });
  send();
});
ws.on('close', (code, reason) => { out.close = { code, reason: reason.toString() }; done(); });
ws.on('error', (e) => { out.error = e.message; });
