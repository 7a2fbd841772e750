// Drives headless Chromium over the DevTools protocol (node `ws`) for the flag proxy browser
// spec: opens PAGE_URL and prints the page's #out text as a line every time it changes, until
// SIGTERM or 40 s pass (Chromium goes with it).   node ff-browser-cdp.js CHROMIUM PROFILE_DIR PAGE_URL
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const WebSocket = require('ws');

const [bin, profile, pageUrl] = process.argv.slice(2);
const chrome = spawn(bin, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
  `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank'], { stdio: 'ignore' });
const quit = (code) => { chrome.kill('SIGKILL'); process.exit(code); };
setTimeout(() => quit(0), 40000);
process.on('SIGTERM', () => quit(0));

function getJson(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { try { resolve(JSON.parse(body)); } catch (e) { reject(e); } });
    }).on('error', reject);
  });
}

async function main() {
  let port;
  for (let i = 0; i < 200 && !port; i++) {
    try { port = Number(fs.readFileSync(`${profile}/DevToolsActivePort`, 'utf8').split('\n')[0]); } catch (e) { await new Promise((r) => setTimeout(r, 50)); }
  }
  let page;
  for (let i = 0; i < 100 && !page; i++) {
    try { page = (await getJson(port, '/json/list')).find((t) => t.type === 'page'); } catch (e) { /* not yet */ }
    if (!page) await new Promise((r) => setTimeout(r, 50));
  }
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  let id = 0;
  const pending = new Map();
  const call = (method, params) => new Promise((resolve) => { pending.set(++id, resolve); ws.send(JSON.stringify({ id, method, params })); });
  ws.on('message', (m) => { const msg = JSON.parse(m); if (pending.has(msg.id)) { pending.get(msg.id)(msg.result); pending.delete(msg.id); } });
  await new Promise((r) => ws.on('open', r));
  await call('Page.navigate', { url: pageUrl });
  let last = null;
  setInterval(async () => {
    const r = await call('Runtime.evaluate', { expression: "(document.getElementById('out')||{}).textContent", returnByValue: true });
    const v = r && r.result && r.result.value;
    if (v && v !== last) { last = v; console.log(v); }
  }, 50);
}
main().catch((e) => { console.error(e && e.stack || String(e)); quit(1); });
