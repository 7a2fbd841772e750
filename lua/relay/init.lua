-- relay: the module scripts require. A script returns an app built with relay.new{...}.
local core = require "relay.core"
local flags = require "relay.flags"
local check = require "relay.check"
local http = require "relay.http"
local json = require "relay.json"

local relay = { version = core.version }

-- ---- loading (driven by relay.host) ----

local load_argv, load_script, last_app = {}, nil, nil
function relay._begin_load(argv, script) load_argv, load_script, last_app = argv or {}, script, nil end
function relay._last_app() return last_app end

-- ---- apps ----

local App = {}
App.__index = App

local function script_decls(spec)
  local decls = {}
  if spec == nil then return decls end
  if type(spec) ~= "table" then check.fail("relay.new: flags must be a table of flag declarations") end
  if spec[1] then -- array form keeps the author's order
    for _, d in ipairs(spec) do
      local c = {}
      for k, v in pairs(d) do c[k] = v end
      decls[#decls + 1] = c
    end
  else
    local names = {}
    for name in pairs(spec) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local d = {}
      if type(spec[name]) ~= "table" then check.fail(("relay.new: flag '%s' must be a table { default = ..., help = ... }"):format(tostring(name))) end
      for k, v in pairs(spec[name]) do d[k] = v end
      d.name = d.name or (name:gsub("_", "-"))
      d.key = name
      decls[#decls + 1] = d
    end
  end
  return decls
end

-- A script may claim a host flag's name (to give it the product's env var): its declaration
-- replaces the host's, and the value still reaches the host.
local function merge_decls(script, host)
  local claimed, all = {}, {}
  for _, d in ipairs(script) do claimed[(d.name:gsub("_", "-"))] = true; all[#all + 1] = d end
  local host_left = {}
  for _, d in ipairs(host) do
    if not claimed[d.name] then all[#all + 1] = d; host_left[#host_left + 1] = d end
  end
  return all, host_left
end

local NEW_KEYS = { "name", "description", "flags", "listen", "listen_flag", "single_process", "max_body", "env_prefix",
                   "summary" }

-- Where the main listener's address is set, for the error when it cannot be bound ("listen
-- 0.0.0.0:8080: Address already in use; set another HOST:PORT with --probe-listen (or
-- PROBE_LISTEN)"): relay.new{listen_flag = "probe-listen"} names the script flag its listen
-- function reads; otherwise, and whenever --listen is given, it is --listen.
-- app:listener(name, address, flag) names its flag the same way.
local function flag_words(sdecls, want, what)
  if want == nil then return nil end
  if type(want) ~= "string" then check.fail(what .. " must be the name of a flag (\"probe-listen\")") end
  for _, d in ipairs(sdecls) do
    if (d.name:gsub("_", "-")) == (want:gsub("_", "-")) then
      return ("--%s (or %s)"):format(d.name:gsub("_", "-"), flags.env_names(d)[1])
    end
  end
  check.fail(("%s '%s' is not one of the script's flags"):format(what, want))
end

-- The env var prefix of a script's flags: env_prefix if given, "" for the bundled personalities
-- (they read their products' names: PORT, API_KEYS, RELAY_MODE...), else the script's file name
-- in upper snake case ("api-gw.lua" reads API_GW_UPSTREAM for --upstream).
local function env_prefix(opts)
  local p = opts.env_prefix
  if p ~= nil then
    if type(p) ~= "string" or not p:match("^[%w_]*$") then
      check.fail("relay.new: env_prefix must be letters, digits and _ (\"APIGW_\", or \"\" for none)")
    end
    return p
  end
  return flags.default_env_prefix(load_script or check.caller_file())
end

function relay.new(opts)
  opts = check.options(opts or {}, NEW_KEYS, "relay.new")
  if opts.max_body ~= nil and not (type(opts.max_body) == "number" and opts.max_body >= 0) then
    check.fail("relay.new: max_body must be a number >= 0")
  end
  if opts.summary ~= nil and type(opts.summary) ~= "function" then
    check.fail("relay.new: summary must be a function(app) returning a table of fields for the 'serving' line")
  end
  local name = opts.name or "script"
  local sdecls = flags.declare(script_decls(opts.flags), env_prefix(opts))
  local all, host_left = merge_decls(sdecls, flags.host)
  local values, help = flags.parse(all, load_argv)
  if help then
    error({ relay_help = flags.help(name, opts.description, sdecls, host_left) }, 0)
  end
  local app = setmetatable({
    _is_app = true,
    name = name,
    flags = {},
    host = {},
    _routes = {},
    _init = {},
    _opts = opts,
  }, App)
  for _, d in ipairs(sdecls) do app.flags[d.key or d.name] = values[d.key or d.name] end
  for _, d in ipairs(flags.host) do
    local key = d.name
    for _, s in ipairs(sdecls) do if (s.name:gsub("_", "-")) == d.name then key = s.key or s.name end end
    app.host[d.name] = values[key]
  end
  app.host.listen_given = app.host.listen
  app._listen_set_by = flag_words(sdecls, opts.listen_flag, "relay.new: listen_flag")
  app._decls = sdecls
  last_app = app
  return app
end

local ROUTE_KEYS = { "max_body", "listener" }

-- A route as the host installs it; at: the author's file:line, for errors found at install.
local function add_route(app, r, keys)
  local at = check.where()
  if type(r.pattern) ~= "string" then check.fail("route pattern must be a string", at) end
  local what = ("route %s %s"):format(r.method, r.pattern)
  r.opts = check.options(r.opts or {}, keys or ROUTE_KEYS, what, at)
  local max = r.opts.max_body
  if max ~= nil and not (type(max) == "number" and max >= 0) then check.fail(what .. ": max_body must be a number >= 0", at) end
  r.at = at
  app._routes[#app._routes + 1] = r
  return app
end

function App:route(method, pattern, fn, opts)
  if type(fn) == "table" and type(opts) == "function" then fn, opts = opts, fn end
  method = type(method) == "string" and method:upper() or check.fail("route method must be a string")
  if type(fn) == "table" and fn._proxy then
    return add_route(self, { method = method, pattern = pattern, proxy = fn._proxy, mount = "", opts = opts })
  end
  if type(fn) == "table" then fn = fn.handler end
  if type(fn) ~= "function" then check.fail("route handler must be a function") end
  return add_route(self, { method = method, pattern = pattern, fn = fn, opts = opts })
end

for _, m in ipairs { "get", "post", "put", "patch", "delete", "head", "options" } do
  App[m] = function(self, pattern, fn, opts) return self:route(m, pattern, fn, opts) end
end
function App:any(pattern, fn, opts) return self:route("*", pattern, fn, opts) end

-- Mounts a handler (a function, or relay.proxy{...}) under a prefix: "/auth" serves "/auth"
-- and everything below it. A proxy strips the prefix before joining its upstream_prefix.
function App:mount(prefix, handler, opts)
  if type(prefix) ~= "string" then check.fail("app:mount(prefix, handler): prefix must be a string") end
  local p = prefix:gsub("/+$", "")
  if type(handler) == "table" and handler._proxy then
    return add_route(self, { method = "*", pattern = p .. "/*", proxy = handler._proxy, mount = p, opts = opts })
  end
  return self:route("*", p .. "/*", handler, opts)
end

-- A listener beside --listen, for routes that must not be reachable on the main one (a git
-- tunnel's relay path on a private interface): app:listener("relay", "127.0.0.1:9000"). Routes
-- serve the main listener unless their opts name another (listener = "relay", or "*" for all);
-- elsewhere their path answers 404. req.listener says where a request came in. Like --listen,
-- listeners are bound at start and kept across reloads. flag (optional) names the script flag
-- the address comes from, for the error when it cannot be bound.
function App:listener(name, address, flag)
  if not (type(name) == "string" and name:match("^[%w_-]+$") and #name < 32 and name ~= "main") then
    check.fail("app:listener(name, address): name is letters, digits, _ and - (not 'main'), under 32 long")
  end
  if not (type(address) == "string" and address ~= "") then check.fail("app:listener(name, address): address is HOST:PORT") end
  self._listeners = self._listeners or {}
  if #self._listeners >= 4 then check.fail("app:listener: at most 4 listeners beside --listen") end
  for _, l in ipairs(self._listeners) do
    if l.name == name then check.fail("app:listener: '" .. name .. "' declared twice") end
  end
  self._listeners[#self._listeners + 1] = { name = name, listen = address,
    from = flag_words(self._decls or {}, flag, "app:listener: flag") }
  return self
end

local function check_route_listener(app, r)
  local want = r.opts.listener
  if want == nil or want == "main" or want == "*" then return want end
  for _, l in ipairs(app._listeners or {}) do
    if l.name == want then return want end
  end
  check.fail(("route %s %s: listener '%s' is not declared (app:listener)"):format(r.method, r.pattern, tostring(want)), r.at)
end

function App:on_init(fn) self._init[#self._init + 1] = fn; return self end

-- fn(app) runs once, as a task of this generation, when a reload replaces it: the place to stop
-- background work (an upstream feed, a subscription) that would otherwise run on, beside the new
-- generation's own, until --drain-timeout. Requests in flight still finish. Not at shutdown.
function App:on_retire(fn) self._retire = self._retire or {}; self._retire[#self._retire + 1] = fn; return self end

-- A WebSocket route: handler(ws, req) with ws:recv() (yields; data, "text"|"binary" or nil,
-- "closed", code, reason), ws:send(data, kind?), ws:close(code?, reason?). opts.protocols: the
-- subprotocols the route speaks, in order of preference ("chat,json").
local WEBSOCKET_KEYS = { "max_body", "listener", "protocols" }

function App:websocket(pattern, fn, opts)
  if type(fn) ~= "function" then check.fail("app:websocket handler must be a function") end
  local protocols = type(opts) == "table" and opts.protocols
  if type(protocols) == "table" then protocols = table.concat(protocols, ",") end
  return add_route(self, { method = "GET", pattern = pattern, fn = fn, opts = opts, websocket = protocols or "" },
    WEBSOCKET_KEYS)
end

-- relay.new{listen = false} (or a listen function returning false): this run serves nothing (a
-- one-shot job such as the flag proxy's GENERATE_OFFLINE_CONFIG, which must work beside a
-- running instance): the host binds no listener at all, --listen and --admin-listen included.
function App:_serves_nothing()
  local l = self._opts.listen
  if type(l) == "function" then l = l(self.flags) end
  return l == false
end

function App:_listen_from()
  if self.host.listen_given and self.host.listen_given ~= "" then return "--listen (or RELAY_LISTEN)" end
  return self._listen_set_by or "--listen (or RELAY_LISTEN)"
end

function App:_listen()
  if self:_serves_nothing() then return "" end
  if self.host.listen_given and self.host.listen_given ~= "" then return self.host.listen_given end
  local l = self._opts.listen
  if type(l) == "function" then l = l(self.flags) end
  return l or "127.0.0.1:8080"
end

-- A personality whose state lives in its process (streams, tunnels, sessions) declares
-- single_process = "why" or function(flags) -> why|nil: --workers above 1 is then refused with
-- that reason, until its state meets elsewhere (Redis).
local function check_workers(app)
  local n, single = tonumber(app.host.workers) or 1, app._opts.single_process
  if n > 1 and app:_serves_nothing() then error(("--workers %d refused: this run serves nothing"):format(n), 0) end
  if n > 1 and app._listeners then
    error(("--workers %d refused: the listener '%s' (app:listener) is served by one process only")
      :format(n, app._listeners[1].name), 0)
  end
  if n <= 1 or not single then return end
  local why = single
  if type(single) == "function" then why = single(app.flags) end
  if why then error(("--workers %d refused: %s"):format(n, why), 0) end
end

-- What the 'serving' line says at start-up and after every reload: this generation's routes, its
-- mounts and their upstreams (a URL's password hidden by the log's rule), then the fields the
-- personality adds with relay.new{summary = function(app) return {...} end}.
function App:_summary()
  local mounts, upstreams, seen = {}, {}, {}
  for _, r in ipairs(self._routes) do
    if r.proxy then
      local t = r.proxy.target_base_url
      local url = type(t) == "table" and table.concat(t, ",") or t
      url = core.log_clean("upstream", url)
      mounts[#mounts + 1] = r.pattern .. "=" .. url
      if not seen[url] then seen[url], upstreams[#upstreams + 1] = true, url end
    end
  end
  local f = { script = self.name, generation = core.generation(), routes = #self._routes }
  if #mounts > 0 then f.mounts, f.upstreams = table.concat(mounts, " "), #upstreams end
  local fn = self._opts.summary
  if fn then
    local ok, more = pcall(fn, self)
    if not ok then f.summary_error = tostring(more)
    elseif type(more) == "table" then for k, v in pairs(more) do if f[k] == nil then f[k] = v end end end
  end
  return f
end

function App:_install()
  check_workers(self)
  local default_max = self._opts.max_body
  for _, r in ipairs(self._routes) do
    local listener = check_route_listener(self, r)
    -- what C refuses (a pattern, a limit) is the route's line's fault
    local ok, err = pcall(function()
      local handler = r.fn or core.proxy_new(r.proxy, r.mount)
      core.route_add(r.method, r.pattern, handler, r.opts.max_body or r.proxy and r.proxy.max_body or default_max or 0,
        r.websocket, listener)
    end)
    if not ok then check.rethrow(err, r.at) end
  end
  for _, fn in ipairs(self._init) do fn(self) end
  if self._retire then
    core.on_retire(function() for _, fn in ipairs(self._retire) do fn(self) end end)
  end
  -- once this generation serves (a timer: a reload's rehearsal and `relayhost check` never run it)
  relay.after(0, function() relay.log.info("serving", self:_summary()) end)
  local h = self.host
  return {
    listen = self:_listen(),
    listen_from = self:_listen_from(),
    listeners = not self:_serves_nothing() and self._listeners or nil,
    admin_listen = not self:_serves_nothing() and h["admin-listen"] or "",
    workers = h.workers,
    log_level = h["log-level"],
    log_format = h["log-format"],
    trusted_proxies = h["trusted-proxies"],
    drain_timeout = h["drain-timeout"],
    tls_cert = h["tls-cert"],
    tls_key = h["tls-key"],
    pid_file = h["pid-file"],
    max_head = h["max-head"],
    watchdog = h.watchdog,
    head_timeout = h["head-timeout"],
    body_timeout = h["body-timeout"],
    keepalive_timeout = h["keepalive-timeout"],
    send_timeout = h["send-timeout"],
  }
end

-- A native C proxy for app:mount or a route: Lilya's Relay parameters (target_base_url,
-- upstream_prefix, preserve_host, max_retries, retry_backoff_factor, retry_statuses, retry_on,
-- timeout, extra/drop/allow_request_headers, drop/allow_response_headers,
-- rewrite_set_cookie_domain, max_body) plus an access phase that may wait (access),
-- on_request/on_response hooks on the heads, and the gateway options, off by default
-- (forwarded_prefix, rewrite_location, rewrite_cookie_path, retry_methods, retry_after).
-- target_base_url may be a list of upstreams (same scheme and path), chosen round-robin, with
-- passive health checks (max_fails in a row take one out for fail_timeout seconds).
-- limits (httpx.Limits) caps the connections per upstream; requests past the cap wait in a
-- queue of at most max_queue, timeout.pool seconds each.
local PROXY_KEYS = { "target_base_url", "upstream_prefix", "preserve_host", "max_retries", "retry_backoff_factor",
  "retry_statuses", "retry_on", "timeout", "extra_request_headers", "drop_request_headers", "allow_request_headers",
  "drop_response_headers", "allow_response_headers", "rewrite_set_cookie_domain", "max_body", "ca_file",
  "tls_insecure", "follow_redirects", "access", "on_request", "on_response", "forwarded_prefix", "rewrite_location",
  "rewrite_cookie_path", "retry_methods", "retry_after", "max_fails", "fail_timeout", "balance", "max_queue",
  "retry_exceptions", "limits" } -- Lilya's spellings: retry_exceptions is retry_on
local LIMITS_KEYS = { "max_connections", "max_keepalive_connections", "keepalive_expiry" }

-- What C would refuse at install (a URL it cannot use, a hook that is not a function) is found
-- here, where the author's line is still on the stack. Outside relayhost (relay.test's load, where
-- relay.core cannot build proxies) it is left to the host.
local function proxy_usable(opts)
  local ok, err = pcall(core.proxy_new, opts, "")
  if ok or tostring(err):find("runs only inside relayhost", 1, true) then return end
  check.rethrow(err)
end

-- p:forward(req, res, {path, headers}) from any handler: the request goes to the C engine as on
-- a mount (its body streams and never enters Lua). path: the path and query sent up (else the
-- client's, joined to the base); headers: set over the client's. The handler returns after it.
local FORWARD_KEYS = { "path", "headers" }
local Proxy = {}
Proxy.__index = Proxy
function Proxy:forward(req, _, o)
  check.options(o, FORWARD_KEYS, "p:forward")
  o = o or {}
  if o.path ~= nil and type(o.path) ~= "string" then check.fail("p:forward: path must be a string") end
  if type(req) ~= "table" or not req._ex then check.fail("p:forward(req, res, opts): req is the handler's request") end
  return core.proxy_forward(self:engine(""), req._ex, o.path, o.headers)
end

-- The C engine for this proxy under a mount prefix ("" off a mount), made once per prefix: what
-- p:forward and an access phase's req.upstream = p use.
function Proxy:engine(mount)
  self._engines = self._engines or {}
  local e = self._engines[mount]
  if not e then
    e = core.proxy_new(self._proxy, mount)
    self._engines[mount] = e
  end
  return e
end

function relay.proxy(opts)
  if type(opts) ~= "table" then check.fail("relay.proxy{target_base_url = \"http://host:port\", ...}") end
  check.options(opts, PROXY_KEYS, "relay.proxy")
  if type(opts.timeout) == "table" then check.options(opts.timeout, { "connect", "read", "write", "pool" }, "relay.proxy timeout") end
  if type(opts.limits) == "table" then check.options(opts.limits, LIMITS_KEYS, "relay.proxy limits") end
  local url = opts.target_base_url
  if type(url) ~= "string" and not (type(url) == "table" and #url > 0) then
    check.fail("relay.proxy: target_base_url is required (\"http://host:port\", or a list of them)")
  end
  proxy_usable(opts)
  return setmetatable({ _proxy = opts }, Proxy)
end

-- ---- what handlers use ----

-- relay.redis(url) -> r; r:call("SET", "k", "v") yields -> reply | nil, err; r:ready()
relay.redis = core.redis_open

-- relay.ws.connect(url, {headers, protocols, timeout, ca_file, max_queued}) -> ws, protocol | nil, err
-- (a bad part of the url, a header or a protocol is nil and an error naming it; nothing is sent)
-- relay.ws.accept(protocols?, {headers, max_message, max_queued, going_away}?) -> ws | nil, err (also
-- req:websocket): upgrades the running request of a plain
-- route, after the handler's own checks (which may still answer 401/400/429 instead).
-- The wrappers below end in check.results(true, core.x(...)), not a tail call: see there.
local WS_CONNECT_KEYS = { "headers", "protocols", "timeout", "ca_file", "max_queued" }
relay.ws = {
  connect = function(url, opts)
    check.options(opts, WS_CONNECT_KEYS, "relay.ws.connect")
    return check.results(true, core.ws_connect(url, opts))
  end,
  accept = http.ws_accept,
}
-- relay.sse: event streams held in C (they outlive the handler and reloads).
-- hold(res, channel, {headers, first, heartbeat}) hands the request over; publish(channel, bytes)
-- writes one event to every stream of channel (nil: all); close(channel); count(channel).
local SSE_HOLD_KEYS = { "headers", "first", "heartbeat" }
relay.sse = {
  hold = function(res, channel, opts)
    opts = check.options(opts or {}, SSE_HOLD_KEYS, "relay.sse.hold")
    return check.results(true, core.sse_hold(res._ex, channel, opts.headers, opts.first, opts.heartbeat))
  end,
  publish = core.sse_publish,
  close = core.sse_close,
  count = core.sse_count,
}
-- relay.tunnel.attach(ws, {role, base_url, allow_hosts, ca_file, ping_interval, stall_timeout,
-- head_timeout}) -> tun: git tunnel streams in C on that session (docs/git-tunnel-protocol.md).
-- tun:wait() yields until it is over; server: tun:relay(target, headers?) relays the running
-- request. relay.tunnel.forwarder{base_url} -> a server-side object whose streams this process
-- executes against base_url (forwarding to another server), with the same :relay().
local TUNNEL_KEYS = { "role", "base_url", "allow_hosts", "ca_file", "ping_interval", "stall_timeout", "head_timeout" }
relay.tunnel = {
  attach = function(ws, opts)
    check.options(opts, TUNNEL_KEYS, "relay.tunnel.attach")
    return check.results(true, core.tunnel_attach(ws, opts))
  end,
  forwarder = function(opts)
    check.options(opts, { "base_url", "allow_hosts", "ca_file" }, "relay.tunnel.forwarder")
    return check.results(true, core.tunnel_forwarder(opts))
  end,
}
-- relay.http.stream{url, headers, timeout (per silence)} -> s, status, headers | nil, err; then
-- s:read() yields -> bytes | nil, "closed"/why; s:close(). For feeds (SSE) read as they arrive.
local HTTP_KEYS = { "url", "method", "headers", "body", "timeout", "max_body", "ca_file" }
relay.http = {
  request = function(opts)
    check.options(opts, HTTP_KEYS, "relay.http.request")
    return check.results(true, core.http_request(opts))
  end,
  stream = function(opts)
    check.options(opts, HTTP_KEYS, "relay.http.stream")
    return check.results(true, core.http_stream(opts))
  end,
  json = http.json,
  headers = http.headers,
  parse_query = http.parse_query,
}
relay.sleep = core.sleep
relay.now = core.now
relay.time = core.time
relay.generation = core.generation
relay.pid = core.pid
-- Lower-case hex of bytes (a table for gsub: no closure or format per byte; digests are hashed
-- per request by the flag proxy).
local HEX = {}
for i = 0, 255 do HEX[string.char(i)] = ("%02x"):format(i) end
local function hex(s) return (s:gsub(".", HEX)) end
relay.crypto = { sha256 = core.sha256, hmac_sha256 = core.hmac_sha256, random = core.random,
                 constant_time_equal = core.constant_time_equal, jws_verify = core.jws_verify,
                 hex = hex, sha256_hex = function(s) return hex(core.sha256(s)) end }
relay.base64 = { encode = core.base64_encode, decode = core.base64_decode }
relay.uuid = core.uuid
relay.url = { parse = core.url_parse }
-- relay.jwt with its option tables checked (the module itself is also required directly).
local jwt = require "relay.jwt"
local JWT_VERIFY_KEYS = { "leeway", "iss", "aud", "now", "require_exp" }
relay.jwt = setmetatable({
  sign = function(claims, secret, opts)
    check.options(opts, { "header" }, "relay.jwt.sign")
    return jwt.sign(claims, secret, opts)
  end,
  verify = function(token, secret, opts)
    check.options(opts, JWT_VERIFY_KEYS, "relay.jwt.verify")
    return jwt.verify(token, secret, opts)
  end,
  verify_jwks = function(token, keys, opts)
    check.options(opts, JWT_VERIFY_KEYS, "relay.jwt.verify_jwks")
    return jwt.verify_jwks(token, keys, opts)
  end,
}, { __index = jwt })
-- relay.jwks(url, {ttl, refetch_min, timeout, max_body, ca_file, on_fetch, log}) -> a kept key set:
-- set:verify(token, verify_jwks opts) -> claims, header | nil, err; set:keys(); set:refresh().
relay.jwks = require("relay.jwks").new
-- relay.json: encode/decode/array/null (lua/relay/json.lua: arrays stay arrays, empty or not)
relay.json = json
-- relay.auth.bearer(value | headers | req) -> token | nil (req:bearer() is the same)
relay.auth = require "relay.auth"
-- relay.fs.list/mkdir/read/write (lua/relay/fs.lua); relay.terminate(): as SIGTERM (drain, exit 0)
relay.fs = require "relay.fs"
relay.terminate = core.terminate
function relay.after(seconds, fn) return core.timer(seconds, false, fn) end
function relay.every(seconds, fn) return core.timer(seconds, true, fn) end

function relay.shared(name, opts)
  check.options(opts, { "max_items" }, "relay.shared")
  return core.dict_open(name, opts and opts.max_items or nil)
end

-- A table logged as a field is encoded here: the keys and values inside it go through the same
-- redaction rule as a line's own fields (core/log), however deep.
local function log_clean(v, depth)
  if type(v) ~= "table" or depth > 8 then return v end
  local out = {}
  for k, x in pairs(v) do
    out[k] = type(k) == "string" and core.log_clean(k, log_clean(x, depth + 1)) or log_clean(x, depth + 1)
  end
  local mt = getmetatable(v) -- cjson's empty-array marker, for one
  return type(mt) == "table" and setmetatable(out, mt) or out
end

local function log_at(level)
  return function(event, fields)
    local args, n = {}, 0
    for k, v in pairs(fields or {}) do
      local t = type(v)
      if t == "table" then
        local ok, enc = pcall(json.encode, log_clean(v, 1))
        v = ok and enc or tostring(v)
      elseif t ~= "string" and t ~= "number" and t ~= "boolean" then
        v = tostring(v)
      end
      args[n + 1], args[n + 2], n = tostring(k), v, n + 2
    end
    core.log(level, event, unpack(args, 1, n))
  end
end
relay.log = { debug = log_at("debug"), info = log_at("info"), warn = log_at("warn"), error = log_at("error") }

local function metric(kind)
  return function(name, help, labels, buckets) return core.metric_register(kind, name, help, labels, buckets) end
end
relay.metrics = {
  counter = metric("counter"),
  gauge = metric("gauge"),
  histogram = metric("histogram"),
  render = core.metrics_render,
  handler = function(_, res)
    return res:send(200, core.metrics_render(), { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" })
  end,
}

-- relay.status(fn): a panel of the status page on --admin-listen (/ and /status.json). fn()
-- returns { title = "…", name = value, … }: numbers, strings, tables, lists of rows. It runs
-- outside any handler (it cannot wait) at every refresh, and must return nothing secret.
local status_hooks = {}
function relay.status(fn)
  if type(fn) ~= "function" then error("relay.status: want a function that returns a table", 2) end
  status_hooks[#status_hooks + 1] = fn
end

local function status_panel(i, fn)
  local ok, v = pcall(fn)
  if ok and type(v) ~= "table" then ok, v = false, "returned " .. type(v) .. ", not a table" end
  if ok then ok, v = pcall(json.encode, v) end
  return ok and v or json.encode { title = "panel " .. i, error = tostring(v) }
end

-- The host's side (core/cli/status.c): every panel, as the text of a JSON array.
function relay.status_json()
  local parts = {}
  for i, fn in ipairs(status_hooks) do parts[i] = status_panel(i, fn) end
  return "[" .. table.concat(parts, ",") .. "]"
end

return relay
