-- The default script (tools/run with no arguments): what relayhost is, the bundled
-- personalities and how to run each, /metrics, and an echo route. Needs no outside service.
local relay = require "relay"

local app = relay.new {
  name = "demo",
  description = "relayhost's demo: a page about the host, /echo and /metrics",
  flags = {
    title = { default = "relayhost", help = "the page title" },
  },
}

local personalities = {
  { "prefix proxy", "relayhost prefix-proxy --mount /api=http://127.0.0.1:9001", "Lilya/Ravyn Relay" },
  { "flag proxy", "relayhost flag-proxy --offline --config-dir ./config", "Harness Feature Flags Relay Proxy" },
  { "git tunnel", "relayhost git-tunnel/server --tokens T  /  relayhost git-tunnel/client ...", "Styra DAS relay" },
  { "workspace relay", "relayhost workspace-relay", "Viewport WebSocket relay" },
}

local function escape(s)
  return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

local function page(base)
  local rows = {}
  for _, p in ipairs(personalities) do
    rows[#rows + 1] = ("<tr><td>%s</td><td>%s</td><td><code>%s</code></td></tr>"):format(
      escape(p[1]), escape(p[3]), escape(p[2]))
  end
  return ([[<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title></head>
<body>
<h1>%s</h1>
<p>relayhost %s is a relay host written in C whose behaviour is scripted in Lua.
The C core owns sockets, HTTP/1.1 parsing, streaming and caches; Lua scripts decide what a relay is,
and <code>kill -HUP</code> reloads them without dropping a connection.</p>
<h2>Bundled personalities</h2>
<table border="1" cellpadding="4"><tr><th>personality</th><th>replaces</th><th>run it</th></tr>
%s
</table>
<h2>Try</h2>
<ul>
<li><code>curl -d hello %s/echo</code> echoes the body back</li>
<li><a href="/metrics">/metrics</a>: Prometheus text</li>
<li><a href="/count">/count</a>: a counter in a shared dictionary that survives reloads</li>
</ul>
</body></html>
]]):format(escape(app.flags.title), escape(app.flags.title), relay.version, table.concat(rows, "\n"), base)
end

app:get("/", function(req, res)
  res:send(200, page("http://" .. (req.headers.host or "127.0.0.1:8080")), { ["content-type"] = "text/html; charset=utf-8" })
end)

app:post("/echo", function(req, res)
  local body, err = req:body()
  if not body then return res:send(400, err .. "\n") end
  res:send(200, body, { ["content-type"] = req.headers["content-type"] or "application/octet-stream" })
end)

local hits = relay.shared("demo")
app:get("/count", function(_, res)
  res:send(200, tostring(hits:incr("count", 1, 0)) .. "\n", { ["content-type"] = "text/plain" })
end)

app:get("/metrics", relay.metrics.handler)

return app
