-- The hostile-client suite's rig: the prefix proxy (scripts/prefix-proxy.lua, --mount
-- /api=http://127.0.0.1:ORIGIN/v1) in front of spec/js/recording-origin.js, an origin that
-- records every byte and every request it can read out of them (leniently, like the origins a
-- relay fronts), and a runner for tables of raw requests.
--
-- A table entry: { NAME, RAW, status = N, origin = 0|1, responses = K? }
--   raw       the bytes the client sends; "{id}" is replaced by a marker unique to the entry,
--             which the entry puts in its target ("/api/{id}") and in any smuggled request
--   status    what the client must get first (400, 413, 200, …)
--   origin    how many requests carrying the marker the origin may see (0: refused before it)
--   responses how many final responses the client may get (default 1)
-- After all entries, the origin's log is checked: no entry formed more requests there than it
-- may, and no request ever carried "smuggled" (a second request made from one client request).
local helpers = require "helpers"
local socket = require "socket"
local cjson = require "cjson"

local M = {}

-- The app the slow-client and flood specs run: a small answer, an echo of the body, and a
-- large streamed answer whose progress is kept for the spec to read.
M.SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "hostile" }
local sent = relay.shared("sent")
app:get("/hello", function(_, res) res:send(200, "hello") end)
app:post("/echo", function(req, res) res:send(200, req:body()) end)
-- a large streamed answer; how far it got is kept for the spec to read
app:get("/big/:mb", function(req, res)
  local chunk = string.rep("x", 64 * 1024)
  res:start(200, { ["content-type"] = "application/octet-stream" })
  for i = 1, tonumber(req.params.mb) * 16 do
    local ok = res:write(chunk)
    if not ok then sent:set("stopped_at", i); return end
  end
  res:finish()
  sent:set("finished", 1)
end)
app:get("/sent", function(_, res) res:json(200, { stopped_at = sent:get("stopped_at"), finished = sent:get("finished") }) end)
return app
]]


-- SCRIPT in a file of its own, for helpers.start.
function M.script_file()
  local path = helpers.tmpdir() .. "/hostile.lua"
  helpers.write_file(path, M.SCRIPT)
  return path
end

function M.start(flags)
  local dir = helpers.tmpdir()
  local rig = { dir = dir, origin_log = dir .. "/origin.log" }
  helpers.write_file(rig.origin_log, "")
  os.execute(("node %s/spec/js/recording-origin.js %s > %s/origin.out 2>&1 & echo $! > %s/origin.pid")
    :format(helpers.root, rig.origin_log, dir, dir))
  rig.origin_port = tonumber(helpers.wait_until(function()
    return (helpers.read_file(dir .. "/origin.out") or ""):match("port (%d+)")
  end, 10, "the recording origin"))
  local args = { "--mount", "/api=http://127.0.0.1:" .. rig.origin_port .. "/v1" }
  for _, f in ipairs(flags or {}) do args[#args + 1] = f end
  rig.host = helpers.start(helpers.root .. "/scripts/prefix-proxy.lua", { flags = args })
  return rig
end

function M.stop(rig)
  local pid = (helpers.read_file(rig.dir .. "/origin.pid") or ""):match("%d+")
  if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  return rig.host:stop()
end

-- Every request the origin has parsed so far.
function M.origin_requests(rig)
  local out = {}
  for l in (helpers.read_file(rig.origin_log) or ""):gmatch("[^\n]+") do
    local e = cjson.decode(l)
    if e.request then out[#out + 1] = e.request end
  end
  return out
end

-- Sends raw bytes on a fresh connection and reads until the host closes it (or `wait` seconds
-- pass); returns every status line's code, in order, and the bytes.
function M.exchange(rig, raw, wait)
  local c = assert(helpers.connect(rig.host.port, nil, wait or 3))
  c:send(raw)
  local got, _, partial = c.sock:receive("*a")
  c:close()
  got = got or partial or ""
  local statuses = {}
  for code in (("\n" .. got):gmatch("\nHTTP/1%.%d (%d%d%d)")) do
    if tonumber(code) >= 200 or tonumber(code) == 101 then statuses[#statuses + 1] = tonumber(code) end
  end
  return statuses, got
end

-- Runs a class's entries; returns a list of failures (strings), empty when all held.
function M.run(rig, class, entries)
  local failures = {}
  local ids = {}
  for i, e in ipairs(entries) do
    e.name, e.raw = e.name or e[1], e.raw or e[2]
    local id = ("%s-%d"):format(class, i)
    ids[i] = id
    local statuses, got = M.exchange(rig, (e.raw:gsub("{id}", id)))
    if statuses[1] ~= e.status then
      failures[#failures + 1] = ("%s %q: answered %s, want %d (%q)"):format(id, e.name,
        tostring(statuses[1]), e.status, got:sub(1, 120))
    elseif #statuses > (e.responses or 1) then
      failures[#failures + 1] = ("%s %q: %d responses to one client request (%s)"):format(id, e.name,
        #statuses, table.concat(statuses, ","))
    end
  end
  socket.sleep(0.3) -- what the proxy forwarded has reached the origin
  local seen = {}
  for _, r in ipairs(M.origin_requests(rig)) do
    if r.target:find("smuggled-" .. class .. "-", 1, true) then
      failures[#failures + 1] = ("a smuggled request reached the origin: %s %s"):format(r.method, r.target)
    end
    local id = r.target:match("(" .. class .. "%-%d+)")
    if id then seen[id] = (seen[id] or 0) + 1 end
  end
  for i, e in ipairs(entries) do
    if (seen[ids[i]] or 0) > e.origin then
      failures[#failures + 1] = ("%s %q: the origin saw %d requests, at most %d allowed"):format(ids[i],
        e.name, seen[ids[i]], e.origin)
    end
    if e.status < 300 and e.origin > 0 and (seen[ids[i]] or 0) < e.origin then
      failures[#failures + 1] = ("%s %q: answered %d but the origin saw no request"):format(ids[i], e.name, e.status)
    end
  end
  return failures
end

return M
