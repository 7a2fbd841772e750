// Drives headless Chromium over the DevTools protocol (node `ws`) for the flag proxy browser
// spec: opens PAGE_URL and prints the page's #out text as a line every time it changes, until
// SIGTERM or 40 s pass (Chromium goes with it).   node ff-browser-cdp.js CHROMIUM PROFILE_DIR PAGE_URL
const { open } = require('./cdp');

const [bin, profile, pageUrl] = process.argv.slice(2);

async function main() {
  const page = await open(bin, profile);
  setTimeout(() => page.quit(0), 40000);
  const { call } = page;
  await call('Page.navigate', { url: pageUrl });
  let last = null;
  setInterval(async () => {
    const r = await call('Runtime.evaluate', { expression: "(document.getElementById('out')||{}).textContent", returnByValue: true });
    const v = r && r.result && r.result.value;
    if (v && v !== last) { last = v; console.log(v); }
  }, 50);
}
main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
