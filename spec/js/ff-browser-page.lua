-- A page for the headless Chromium spec, on its own origin (so every call to the flag proxy is
-- cross-origin, CORS included): it loads the real @harnessio/ff-javascript-client-sdk bundle
-- from npm and writes what the SDK evaluates into the DOM.
local relay = require "relay"
local app = relay.new { name = "ff-browser-page", flags = {
  proxy = { default = "", help = "the flag proxy's base URL" },
  sdk = { default = "", help = "path of sdk.client-iife.js" },
  key = { default = "sample-client-sdk-key", help = "SDK key" },
  stream = { default = false, help = "let the SDK stream (headless --dump-dom cannot: its virtual time never ends)" },
} }

local f = assert(io.open(app.flags.sdk, "rb"))
local bundle = f:read("*a")
f:close()

local page = ([[<!doctype html>
<html><head><meta charset="utf-8"><title>ff</title><script src="/sdk.js"></script></head>
<body><pre id="out">pending</pre><pre id="err"></pre>
<script>
const { initialize, Event } = HarnessFFSDK;
const target = { identifier: 'bob', name: 'Bob', attributes: { email: 'bob@corp.example', country: 'DE', plan: 'free' } };
const client = initialize('%s', target, { baseUrl: '%s', eventUrl: '%s', streamEnabled: %s, pollingEnabled: false });
const render = () => {
  document.getElementById('out').textContent = JSON.stringify({
    banner: client.variation('banner-text', 'DEFAULT'),
    dark: client.variation('dark-mode', false),
    items: client.variation('max-items', -1),
    theme: client.variation('theme-config', null),
    gated: client.variation('gated-banner', 'DEFAULT'),
  });
};
client.on(Event.READY, render);
client.on(Event.CHANGED, render);
client.on(Event.ERROR, (e) => { document.getElementById('err').textContent += 'error: ' + JSON.stringify(e) + '\n'; });
</script></body></html>
]]):format(app.flags.key, app.flags.proxy, app.flags.proxy, tostring(app.flags.stream))

app:get("/", function(_, res) res:send(200, page, { ["content-type"] = "text/html; charset=utf-8" }) end)
app:get("/sdk.js", function(_, res) res:send(200, bundle, { ["content-type"] = "application/javascript" }) end)
return app
