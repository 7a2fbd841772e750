// Headless Chromium driven over the DevTools protocol (node `ws`), for the browser specs.
//   const page = await require('./cdp').open(CHROMIUM, PROFILE_DIR, [extra flags]);
//   await page.call('Page.navigate', { url }); page.on((event) => …); page.quit(code);
// quit kills Chromium and exits this process; SIGTERM quits with 0.
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const WebSocket = require('ws');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function getJson(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { try { resolve(JSON.parse(body)); } catch (e) { reject(e); } });
    }).on('error', reject);
  });
}

// The page target of the Chromium whose profile is in profile, once it has one.
async function pageTarget(profile) {
  let port;
  for (let i = 0; i < 200 && !port; i++) {
    try { port = Number(fs.readFileSync(`${profile}/DevToolsActivePort`, 'utf8').split('\n')[0]); } catch (e) { await sleep(50); }
  }
  for (let i = 0; i < 100; i++) {
    try {
      const page = (await getJson(port, '/json/list')).find((t) => t.type === 'page');
      if (page) return page;
    } catch (e) { /* not yet */ }
    await sleep(50);
  }
  throw new Error('Chromium has no page');
}

async function open(bin, profile, flags = []) {
  const chrome = spawn(bin, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
    `--user-data-dir=${profile}`, '--remote-debugging-port=0', ...flags, 'about:blank'], { stdio: 'ignore' });
  const quit = (code) => { chrome.kill('SIGKILL'); process.exit(code); };
  process.on('SIGTERM', () => quit(0));
  let target;
  try { target = await pageTarget(profile); } catch (e) { chrome.kill('SIGKILL'); throw e; }
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  let id = 0;
  const pending = new Map();
  const listeners = [];
  ws.on('message', (m) => {
    const msg = JSON.parse(m);
    if (pending.has(msg.id)) { pending.get(msg.id)(msg.result); pending.delete(msg.id); return; }
    listeners.forEach((fn) => fn(msg));
  });
  await new Promise((r) => ws.on('open', r));
  return {
    call: (method, params) => new Promise((resolve) => { pending.set(++id, resolve); ws.send(JSON.stringify({ id, method, params })); }),
    on: (fn) => listeners.push(fn),
    quit,
  };
}

module.exports = { open, sleep };
