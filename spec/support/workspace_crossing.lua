-- Frames crossing two workspace relays, timed: the client (on one relay) sends a numbered E2EE
-- frame every `every` seconds, the daemon (on the other) answers each one it gets, and a round
-- trip is done when the answer reaches the client. The longest time between two done round
-- trips is how long frames could not cross; what the client got instead is counted by code.
local socket = require "socket"
local cjson = require "cjson"
local W = require "workspace_support"

local M = {}
local Probe = {}
Probe.__index = Probe

M.HMAC = "bus-hmac-key-for-tests-0123456789"

-- Two relays on the Redis at url (RELAY_REDIS_URL), ids { daemon's, client's }, plus env:
-- the daemon's relay is pair.A, the client's pair.B (redirect off there: every frame crosses the
-- bus), and pair.peers the WebSocket peers. The probe's ten frames a second stay inside the rate
-- limits. pair:stop() stops them all and says whether the relays exited cleanly.
function M.start(url, ids, env)
  local pair = { peers = require("ws_peers").start() }
  W.fixture(pair.peers)
  local function relay(id, extra)
    local e = { RELAY_BACKPLANE_MODE = "redis", RELAY_REDIS_URL = url, RELAY_BUS_ENABLED = "1",
                RELAY_BUS_HMAC_KEY = M.HMAC, RELAY_BUS_POLL_INTERVAL_MS = "50",
                RELAY_RUNTIME_RATE_PER_MINUTE = "100000", RELAY_RUNTIME_RATE_PER_MINUTE_WORKSPACE = "100000",
                RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE = "100000" }
    for k, v in pairs(env) do e[k] = v end
    return W.start_named(pair.peers, id, e, extra)
  end
  pair.A = relay(ids[1])
  pair.B = relay(ids[2], { RELAY_CLIENT_REDIRECT_ENABLED = "0" })
  function pair.stop()
    local ok, err = pcall(function()
      for _, h in ipairs { pair.A, pair.B } do assert(h:stop() == 0, "a relay exited uncleanly") end
    end)
    pair.peers:stop()
    return ok, err
  end
  return pair
end

-- peers (ws_peers), the client's and the daemon's peer ids, and the session the client owns.
function M.new(peers, client, daemon, session, every)
  return setmetatable({ peers = peers, client = client, daemon = daemon, session = session, every = every or 0.1,
                        sent = 0, answered = 0, statuses = {}, worst = 0 }, Probe)
end

-- This peer's message events, taken out of the queue (the others stay).
local function take(peers, id)
  local mine, rest = {}, {}
  for _, ev in ipairs(peers.events) do
    if ev.id == id and ev.ev == "message" then mine[#mine + 1] = ev else rest[#rest + 1] = ev end
  end
  peers.events = rest
  return mine
end

function Probe:answered_at(t)
  if self.last then
    local gap = t - self.last
    if gap > self.worst then self.worst, self.worst_from = gap, self.last end
  end
  self.last, self.answered = t, self.answered + 1
end

function Probe:step()
  local t = socket.gettime()
  if t >= (self.next_at or 0) then
    self.sent = self.sent + 1
    self.peers:send(self.client, W.e2ee(self.session, self.sent, "p" .. self.sent))
    self.next_at = t + self.every
  end
  self.peers:pump()
  for _, ev in ipairs(take(self.peers, self.daemon)) do
    local n = (cjson.decode(ev.text).ciphertext or ""):match("^p(%d+)$")
    if n then self.peers:send(self.daemon, W.e2ee(self.session, tonumber(n), "r" .. n)) end
  end
  for _, ev in ipairs(take(self.peers, self.client)) do
    local f = cjson.decode(ev.text)
    if (f.ciphertext or ""):match("^r%d+$") then
      self:answered_at(t)
    elseif f.type == "relay_status" then
      self.statuses[f.code] = (self.statuses[f.code] or 0) + 1
    end
  end
  socket.sleep(0.01)
end

-- Probes for seconds.
function Probe:run(seconds)
  local stop = socket.gettime() + seconds
  while socket.gettime() < stop do self:step() end
end

-- Probes until n more round trips are done; an error naming what the client saw after seconds.
function Probe:until_answered(n, seconds, what)
  local want, stop = self.answered + n, socket.gettime() + seconds
  while self.answered < want do
    if socket.gettime() > stop then error(("%s: no round trip within %ss (%s)"):format(what, seconds, self:summary()), 2) end
    self:step()
  end
end

-- What happened, as one line.
function Probe:summary()
  local codes = {}
  for code, n in pairs(self.statuses) do codes[#codes + 1] = ("%s x%d"):format(code, n) end
  table.sort(codes)
  return ("longest gap between round trips %.2f s; %d frames sent, %d answered; the client saw %s")
    :format(self.worst, self.sent, self.answered, #codes > 0 and table.concat(codes, ", ") or "no status frames")
end

-- The daemon (on one relay) and a client (on another) set up a session over the bus: the
-- client's kex init reaches the daemon, the daemon's response reaches the client.
function M.session(peers, client, daemon, session)
  peers:send(client, W.kex_init("kex-" .. session))
  local init = peers:message(daemon, 10)
  assert(init.requestId == "kex-" .. session, "the daemon got the kex init")
  peers:send(daemon, W.kex_response("kex-" .. session, session))
  local resp = peers:message(client, 10)
  assert(resp.sessionId == session, "the client got the kex response: " .. cjson.encode(resp))
end

return M
