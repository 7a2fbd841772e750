-- W3C Trace Context (issue 20): a request's traceparent is taken from the client when valid, else
-- a trace is started; the upstream sees the client's trace-id with relayhost's own span as its
-- parent-id (through the proxy and the git tunnel); scripts read req.trace_id; the access log
-- carries it. An invalid traceparent is replaced, never forwarded, and its tracestate dropped.
local helpers = require "helpers"
local socket = require "socket"
local origin_mod = require "raw_origin"
local gt = require "git_tunnel_support"

local TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
local PARENT = "00f067aa0ba902b7"
local VALID = "00-" .. TRACE .. "-" .. PARENT .. "-01"

local function traceparents(raw)
  local out = {}
  for v in raw:gmatch("\r\n[Tt][Rr][Aa][Cc][Ee][Pp][Aa][Rr][Ee][Nn][Tt]:%s*([^\r]*)") do out[#out + 1] = v end
  return out
end

local function access_trace(host, path)
  local id
  helpers.wait_until(function()
    id = host:log():match('"event":"access","method":"GET","path":"' .. path:gsub("%p", "%%%0") .. '"[^\n]*"trace_id":"(%x+)"')
    return id
  end, 5, "the access line of " .. path)
  return id
end

describe("trace context", function()
  local origin, host
  setup(function()
    origin = origin_mod.start()
    host = helpers.start("prefix-proxy", { flags = { "--mount=/up=http://127.0.0.1:" .. origin.port } })
  end)
  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if origin then origin:stop() end
  end)

  it("passes the client's trace upstream with relayhost's span as the parent, and logs the trace id", function()
    origin:take(0)
    local res = host:get("/up/a", { traceparent = VALID, tracestate = "congo=t61rcWkgMzE" })
    assert.equal(200, res.status)
    local got = origin:take()
    assert.equal(1, #got)
    local tp = traceparents(got[1])
    assert.equal(1, #tp, got[1])
    local trace, parent, flags = tp[1]:match("^00%-(%x+)%-(%x+)%-(%x%x)$")
    assert.equal(TRACE, trace)
    assert.equal(16, #parent)
    assert.not_equal(PARENT, parent)
    assert.equal("01", flags)
    assert.matches("\r\ntracestate: congo=t61rcWkgMzE\r\n", got[1])
    assert.equal(TRACE, access_trace(host, "/up/a"))
  end)

  it("starts a trace when the client sends none", function()
    origin:take(0)
    assert.equal(200, host:get("/up/b").status)
    local tp = traceparents(origin:take()[1])
    assert.equal(1, #tp)
    local trace = tp[1]:match("^00%-(%x+)%-%x+%-01$")
    assert.equal(32, #trace)
    assert.equal(trace, access_trace(host, "/up/b"))
  end)

  local invalid = {
    upper = "00-" .. TRACE:upper() .. "-" .. PARENT .. "-01",
    zero_trace = "00-" .. ("0"):rep(32) .. "-" .. PARENT .. "-01",
    zero_parent = "00-" .. TRACE .. "-" .. ("0"):rep(16) .. "-01",
    version_ff = "ff-" .. TRACE .. "-" .. PARENT .. "-01",
    too_long = VALID .. "-extra",
    short = "00-" .. TRACE:sub(2) .. "-" .. PARENT .. "-01",
  }
  for name, value in pairs(invalid) do
    it("replaces an invalid traceparent (" .. name .. ") and drops its tracestate", function()
      origin:take(0)
      local path = "/up/bad-" .. name
      assert.equal(200, host:get(path, { traceparent = value, tracestate = "congo=t61rcWkgMzE" }).status)
      local raw = origin:take()[1]
      local tp = traceparents(raw)
      assert.equal(1, #tp, raw)
      assert.not_equal(value, tp[1])
      local trace = tp[1]:match("^00%-(%x+)%-%x+%-01$")
      assert.equal(32, #trace)
      assert.not_equal(TRACE, trace)
      assert.is_nil(raw:lower():find("tracestate", 1, true), raw)
      assert.equal(trace, access_trace(host, path))
    end)
  end

  it("takes a later version's traceparent (its fields after the four ignored) and sends version 00", function()
    origin:take(0)
    assert.equal(200, host:get("/up/v1", { traceparent = "01-" .. TRACE .. "-" .. PARENT .. "-01-what-comes-next" }).status)
    local tp = traceparents(origin:take()[1])
    assert.matches("^00%-" .. TRACE .. "%-%x+%-01$", tp[1])
  end)

  it("treats two traceparent fields as none", function()
    origin:take(0)
    local c = assert(socket.connect("127.0.0.1", host.port))
    c:send("GET /up/two HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: " .. VALID ..
           "\r\ntraceparent: " .. VALID .. "\r\n\r\n")
    c:settimeout(5)
    assert.matches("^HTTP/1.1 200", c:receive("*a"))
    c:close()
    local tp = traceparents(origin:take()[1])
    assert.equal(1, #tp)
    assert.not_equal(TRACE, tp[1]:match("^00%-(%x+)"))
  end)

  it("gives scripts req.trace_id", function()
    local script = helpers.tmpdir() .. "/t.lua"
    helpers.write_file(script, [[
local relay = require "relay"
local app = relay.new { name = "t" }
app:get("/", function(req, res) res:send(200, req.trace_id) end)
return app
]])
    local h = helpers.start(script)
    assert.equal(TRACE, h:get("/", { traceparent = VALID }).body)
    local started = h:get("/").body
    assert.matches("^%x+$", started)
    assert.equal(32, #started)
    assert.equal(0, h:stop())
  end)

  it("passes the trace through the git tunnel to the client's upstream", function()
    local server = gt.start_server()
    local client = gt.start_ready_client(server.port, "tr", "http://127.0.0.1:" .. origin.port)
    origin:take(0)
    local c = assert(socket.connect("127.0.0.1", server.port))
    c:send("GET /v1/relay/tr/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: " .. VALID .. "\r\n\r\n")
    c:settimeout(10)
    assert.matches("^HTTP/1.1 200", c:receive("*a"))
    c:close()
    local got = origin:take()
    assert.equal(1, #got)
    local tp = traceparents(got[1])
    assert.equal(1, #tp, got[1])
    local trace, parent = tp[1]:match("^00%-(%x+)%-(%x+)%-01$")
    assert.equal(TRACE, trace)
    assert.not_equal(PARENT, parent)
    assert.matches('"trace_id":"' .. TRACE .. '"', server:log())
    assert.same({}, gt.stop_all())
    local _ = client
  end)
end)
