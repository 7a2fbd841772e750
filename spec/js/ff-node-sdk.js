// The real Harness Node server SDK against a flag proxy, for spec/flag-proxy/flag_proxy_spec.lua.
//   node ff-node-sdk.js eval  BASE_URL API_KEY CHECKS_JSON   evaluates every {flag, kind} for every
//                                                            target and prints {flag: {target: value}}
//   node ff-node-sdk.js watch BASE_URL API_KEY CHECKS_JSON   streams; prints "ready", then one JSON line
//                                                            per "changed" event with the new values (30 s)
//   node ff-node-sdk.js auth  BASE_URL API_KEY               prints what initialisation did
// CHECKS_JSON: {"flags": [{"flag": "f", "kind": "boolean"}], "targets": [{identifier, name, attributes}]}
const { Client } = require('@harnessio/ff-nodejs-server-sdk');

const [mode, baseUrl, apiKey, checksJson] = process.argv.slice(2);
const checks = checksJson ? JSON.parse(checksJson) : { flags: [], targets: [] };
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

function variation(client, kind, flag, target) {
  switch (kind) {
    case 'boolean': return client.boolVariation(flag, target, false);
    case 'int': return client.numberVariation(flag, target, -1);
    case 'json': return client.jsonVariation(flag, target, { default: true });
    default: return client.stringVariation(flag, target, 'DEFAULT');
  }
}

async function evaluateAll(client, flags) {
  const out = {};
  for (const { flag, kind } of flags) {
    out[flag] = {};
    for (const t of checks.targets) out[flag][t.identifier] = await variation(client, kind, flag, t);
  }
  return out;
}

async function main() {
  const client = new Client(apiKey, {
    baseUrl, eventsUrl: baseUrl, enableStream: mode === 'watch', enableAnalytics: false,
    logger: quiet, axiosTimeout: 5000, axiosRetries: mode === 'auth' ? 2 : 3,
  });
  if (mode === 'auth') {
    let failed = null;
    try { await client.waitForInitialization(); } catch (e) { failed = e; }
    const status = failed && failed.response ? failed.response.status : null;
    console.log(JSON.stringify({ failed: !!failed, status }));
    process.exit(0);
  }
  await client.waitForInitialization();
  if (mode === 'eval') {
    console.log(JSON.stringify(await evaluateAll(client, checks.flags)));
    client.close();
    process.exit(0);
  }
  const started = Date.now();
  client.on('changed', async (flag) => {
    const kinds = checks.flags.filter((f) => f.flag === flag);
    const values = await evaluateAll(client, kinds);
    console.log(JSON.stringify({ changed: flag, at: Date.now() - started, values }));
  });
  setTimeout(() => console.log('ready'), 300); // the stream connects right after initialisation
  setTimeout(() => { client.close(); process.exit(0); }, 30000); // the spec kills it sooner
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
