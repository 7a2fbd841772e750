-- git-tunnel/client: the relay-client of Styra DAS's git relay. It dials --server-url over one
-- WebSocket, registers --client-key with --styra-token, and executes every relayed request
-- against --base-url (its host and port, the relayed path under its path). Probes on
-- --probe-listen: /v1/system/alive, /v1/system/ready, /v1/system/metrics.
--
--   relayhost git-tunnel/client --base-url=https://git.corp --client-key=git \
--     --server-url=wss://relay.example.com/v1/relay/register --styra-token="$STYRA_TOKEN"
local relay = require "relay"
local gt = require "relay.gittunnel"
local backoff = require "relay.backoff"

local app = relay.new {
  name = "git-tunnel/client",
  description = "relay-client: dials the relay-server and executes relayed requests against base-url",
  flags = {
    base_url = { required = true, help = "where relayed requests go: base-url + path (e.g. https://git.corp)" },
    client_key = { required = true, help = "the key to register with (letters, digits, '_', '-')" },
    server_url = { required = true, help = "ws:// or wss://…/v1/relay/register of the relay-server" },
    styra_token = { required = true, help = "bearer token for the relay-server" },
    allow_hosts = { default = "", help = "with --base-url=http:/, the hosts relayed paths may name: host (default port only), host:port or host:* (comma-separated)" },
    probe_listen = { default = "0.0.0.0:8080", help = "HOST:PORT of /v1/system/alive, /ready and /metrics" },
    backoff_max = { default = 30, help = "longest wait between reconnects, seconds" },
    ping_interval = { default = 5, help = "seconds between heartbeats; a server silent for 3 is dropped" },
    stall_timeout = { default = 60, help = "seconds a response may wait for its reader before its stream is reset" },
  },
  listen = function(flags) return flags.probe_listen end,
  listen_flag = "probe-listen", -- a taken port's error names it
}

local f = app.flags
if not gt.key_ok(f.client_key) then
  error("git-tunnel/client: --client-key may hold only letters, digits, '_' and '-'", 0)
end
if not f.server_url:match("^wss?://") then error("git-tunnel/client: --server-url must be ws:// or wss://", 0) end
local allow_hosts = gt.list(f.allow_hosts)

local m_up = relay.metrics.gauge("relay_client_connected", "1 while the tunnel to the relay-server is up")
local m_connects = relay.metrics.counter("relay_client_connects_total", "tunnels established")
local m_failures = relay.metrics.counter("relay_client_connect_failures_total", "failed connection attempts")
local m_streams = relay.metrics.gauge("relay_client_streams", "relayed requests in flight")
local m_streams_total = relay.metrics.gauge("relay_client_tunnel_streams_total", "relayed requests on the current tunnel")
local m_resets = relay.metrics.gauge("relay_client_tunnel_stream_resets", "streams reset on the current tunnel (stalled, cancelled, failed)")
local m_bytes = relay.metrics.gauge("relay_client_tunnel_bytes", "body bytes on the current tunnel", { "direction" })

local tun -- the current tunnel, nil while down

local function connect_once()
  local ws, err = relay.ws.connect(f.server_url, {
    protocols = { gt.protocol }, timeout = 10, max_queued = gt.max_queued,
    headers = { authorization = "Bearer " .. f.styra_token, ["x-relay-client-key"] = f.client_key },
  })
  if not ws then return nil, err end
  -- A server may close right after its 101 (shutting down, or another token took the key): the
  -- session is over before the tunnel could attach, and that is one more failed attempt. Raised
  -- from here, it ended the reconnect loop for good.
  local attached, t = pcall(relay.tunnel.attach, ws, { role = "client", base_url = f.base_url,
    allow_hosts = allow_hosts, ping_interval = f.ping_interval, stall_timeout = f.stall_timeout })
  if not attached then
    local _, _, code, reason = ws:recv()
    return nil, ("the relay-server closed the tunnel at once: %s %s"):format(tostring(code), tostring(reason))
  end
  tun = t
  m_up:set(1)
  m_connects:inc()
  relay.log.info("relay_connected", { server_url = f.server_url, client_key = f.client_key })
  local why = tun:wait()
  tun = nil
  m_up:set(0)
  return true, why
end

-- A refused token gets its own line, at error, saying which setting to fix (the server's 401:
-- a token it does not know; 403: a token bound to other client keys). nil for other failures.
local function token_refused(why, wait)
  local status = tostring(why):match("answered (40[13]) instead of 101")
  if not status then return nil end
  local what = status == "401" and "--styra-token (STYRA_TOKEN): 401"
    or "--styra-token (STYRA_TOKEN) for --client-key (CLIENT_KEY): 403, the token is bound to other keys"
  relay.log.error("relay_token_refused", { status = tonumber(status), retry_in = wait,
    message = ("the relay-server refuses %s; retrying in %s s"):format(what, wait) })
  return true
end

-- Each attempt is a task of its own (a timer): a WebSocket session lives until the task that
-- dialled it ends, so one task looping over attempts kept every past session (and, until the
-- closing handshake, its connection) for good.
-- Jittered, so replicas that lost the server together do not return together.
local waits = backoff.new { min = 0.5, max = f.backoff_max, jitter = true }
local function run()
  local started = relay.now()
  local ok, why = connect_once()
  if ok then relay.log.warn("relay_disconnected", { reason = why }) else m_failures:inc() end
  if ok and relay.now() - started > 10 then waits:reset() end -- it held: start over gently
  local wait = math.floor(waits:next() * 10 + 0.5) / 10 -- logged as it is waited
  if not ok and not token_refused(why, wait) then
    relay.log.warn("relay_connect_failed", { error = why, retry_in = wait })
  end
  relay.after(wait, run)
end

app:get("/v1/system/alive", function(req, res) res:send(200, "alive\n") end)
app:get("/v1/system/ready", function(req, res)
  if tun then return res:send(200, "ready\n") end
  res:send(500, "not ready: no tunnel to the relay-server\n")
end)
app:get("/v1/system/metrics", function(req, res)
  local st = tun and tun:stats() or { streams = 0, streams_total = 0, resets_total = 0, bytes_in = 0, bytes_out = 0 }
  m_resets:set(st.resets_total)
  m_streams:set(st.streams)
  m_streams_total:set(st.streams_total)
  m_bytes:set(st.bytes_in, { "in" })
  m_bytes:set(st.bytes_out, { "out" })
  relay.metrics.handler(req, res)
end)

math.randomseed(relay.pid() + relay.time())
app:on_init(function() relay.after(0, run) end)

return app
