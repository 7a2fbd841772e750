// Drives headless Chromium over the DevTools protocol (node `ws`) for the status page spec:
// opens PAGE_URL, waits for the page's first refresh (body[data-refreshes]), saves a screenshot
// to PNG and prints one JSON line: every [data-k] element's raw value (data-v), the text of the
// listeners table and of the script panels, the URLs the page requested, and any console error
// or exception (a CSP refusal shows up there).
//   node status-page-cdp.js CHROMIUM PROFILE_DIR PAGE_URL PNG
const fs = require('fs');
const { open, sleep } = require('./cdp');

const [bin, profile, pageUrl, png] = process.argv.slice(2);

const SNAPSHOT = `JSON.stringify({
  refreshes: Number(document.body.dataset.refreshes || 0),
  values: Object.fromEntries([...document.querySelectorAll('[data-k]')].map((e) => [e.dataset.k, e.dataset.v])),
  listeners: [...document.querySelectorAll('#listeners tr')].slice(1).map((r) => [...r.cells].map((c) => c.textContent)),
  panels: document.getElementById('panels').textContent,
  chart: document.querySelectorAll('#chart polyline').length,
})`;

async function main() {
  const page = await open(bin, profile, ['--window-size=1280,1000']);
  setTimeout(() => { console.error('timed out'); page.quit(1); }, 40000);
  const { call } = page;
  const errors = [];
  const requested = [];
  page.on((msg) => {
    if (msg.method === 'Runtime.exceptionThrown') errors.push(msg.params.exceptionDetails.text);
    if (msg.method === 'Log.entryAdded' && msg.params.entry.level === 'error') errors.push(msg.params.entry.text);
    if (msg.method === 'Runtime.consoleAPICalled' && msg.params.type === 'error') errors.push(JSON.stringify(msg.params.args));
    if (msg.method === 'Network.requestWillBeSent') requested.push(msg.params.request.url);
  });
  for (const d of ['Runtime', 'Log', 'Network', 'Page']) await call(`${d}.enable`, {});
  await call('Emulation.setDeviceMetricsOverride', { width: 1280, height: 1000, deviceScaleFactor: 1, mobile: false });
  await call('Page.navigate', { url: pageUrl });
  let snap;
  for (let i = 0; i < 300; i++) {
    const r = await call('Runtime.evaluate', { expression: SNAPSHOT, returnByValue: true });
    snap = r && r.result && r.result.value && JSON.parse(r.result.value);
    if (snap && snap.refreshes > 0) break;
    await sleep(50);
  }
  await sleep(200); // late console errors, and a settled layout for the picture
  const shot = await call('Page.captureScreenshot', { format: 'png' });
  fs.writeFileSync(png, Buffer.from(shot.data, 'base64'));
  console.log(JSON.stringify({ ...snap, errors, requested }));
  page.quit(0);
}
main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
