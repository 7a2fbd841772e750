-- The git tunnel at shutdown and at a refused token (issue 20, "Git tunnel"): a relay-server
-- given SIGTERM closes its tunnels with 1001 at once (not after --drain-timeout), answers the
-- requests in flight through them, and its clients notice at once; a client whose token is
-- refused says so, naming the flag and its variable, and waits longer each time.
local helpers = require "helpers"
local socket = require "socket"
local env = require "git_tunnel_support"

describe("git tunnel shutdown", function()
  after_each(function() env.stop_all() end)

  it("closes its tunnels at SIGTERM: exits well under --drain-timeout, the request in flight is answered, the client is unready at once", function()
    -- an origin that accepts (the kernel's backlog) and never answers: the request stays in flight
    local origin = assert(socket.bind("127.0.0.1", 0))
    local _, oport = origin:getsockname()
    local server = env.start_server({ "--drain-timeout=30" })
    local client = env.start_ready_client(server.port, "slow", "http://127.0.0.1:" .. oport)
    local c = server:client(20)
    c.sock:send("GET /v1/relay/slow/x HTTP/1.1\r\nHost: x\r\n\r\n")
    helpers.wait_until(function()
      return client:get("/v1/system/metrics").body:match("\nrelay_client_tunnel_streams_total 1")
    end, 10, "the request to reach the client")
    local t0 = socket.gettime()
    server:signal("TERM")
    -- the request in flight gets an answer (502/503), not a hang until the drain ends
    c.sock:settimeout(10)
    local line = c.sock:receive("*l")
    assert.matches("^HTTP/1.1 50[23]", tostring(line))
    helpers.wait_until(function() return server:exited() end, 10, "the server to exit")
    local took = socket.gettime() - t0
    assert.is_true(took < 3, ("the server took %.2f s to exit with --drain-timeout=30"):format(took))
    assert.equal(0, server:exited())
    -- the client noticed at once: not ready, and trying to come back
    helpers.wait_until(function() return not env.ready(client) end, 2, "the client's /ready to turn non-200")
    helpers.wait_until(function() return client:count("relay_connect_failed") >= 1 end, 5, "a reconnect attempt")
    assert.matches('"event":"relay_disconnected"[^\n]*1001', client:log())
    c:close()
    origin:close()
  end)
end)

describe("git tunnel client with a refused token", function()
  after_each(function() env.stop_all() end)

  -- The relay_token_refused lines in the client's log, in order.
  local function refusals(client)
    local out = {}
    for line in client:log():gmatch('[^\n]*"event":"relay_token_refused"[^\n]*') do out[#out + 1] = line end
    return out
  end

  it("says plainly that --styra-token is refused (401), at error, and waits longer each time", function()
    local server = env.start_server()
    local client = env.start_client(server.port, "k", "http://127.0.0.1:1",
                                    { "--styra-token=wrong-token", "--backoff-max=8" })
    helpers.wait_until(function() return #refusals(client) >= 4 end, 20, "four refused attempts")
    local lines = refusals(client)
    assert.matches('"level":"error"', lines[1])
    assert.matches("the relay%-server refuses %-%-styra%-token %(STYRA_TOKEN%): 401; retrying in [%d.]+ s", lines[1])
    assert.is_nil(client:log():find("wrong-token", 1, true)) -- never the token itself
    assert.equal(0, client:count("relay_connect_failed"))   -- the refusal's own line, not the generic one
    local waits = {}
    for i, line in ipairs(lines) do waits[i] = tonumber(line:match('"retry_in":([%d.]+)')) end
    for i = 2, #waits do
      assert.is_true(waits[i] >= waits[i - 1], "waits " .. table.concat(waits, ", "))
    end
    assert.is_true(waits[4] > waits[1] * 2, "waits " .. table.concat(waits, ", "))
    assert.is_false(env.ready(client))
  end)

  it("names --client-key when the token is bound to other keys (403)", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/tokens", "tok-a team-a\n")
    local server = env.start_server({ "--tokens-file=" .. dir .. "/tokens" })
    local client = env.start_client(server.port, "team-b", "http://127.0.0.1:1", { "--styra-token=tok-a" })
    helpers.wait_until(function() return #refusals(client) >= 1 end, 10, "a refused attempt")
    assert.matches("refuses %-%-styra%-token %(STYRA_TOKEN%) for %-%-client%-key %(CLIENT_KEY%): 403", refusals(client)[1])
  end)
end)

describe("git tunnel client against a server that closes at once", function()
  after_each(function() env.stop_all() end)

  -- A server that answers 101 and closes in the same breath (one shutting down, or the 409 race
  -- of key_refused): the client counts a failed attempt and tries again. Before, attaching the
  -- tunnel to the closed session raised and the reconnect loop ended for good.
  it("keeps reconnecting, with the server's close code and reason in its line, holding no past connection", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/closer.lua", [[
local relay = require "relay"
local app = relay.new { name = "closer" }
app:get("/v1/relay/register", function(req, res)
  local ws = relay.ws.accept("relayhost-tunnel.v1")
  if ws then ws:close(1001, "going away now") end
end)
return app
]])
    local server = env.track(helpers.start(dir .. "/closer.lua"))
    local client = env.start_client(server.port, "k", "http://127.0.0.1:1", { "--backoff-max=0.01" })
    -- the close comes with the 101 (a failed attempt) or just after it (a tunnel that ended)
    local function attempts() return client:count("relay_connect_failed") + client:count("relay_disconnected") end
    helpers.wait_until(function() return attempts() >= 300 end, 60, "300 attempts")
    -- every past attempt's connection is let go (before: one socket and its session kept per
    -- attempt, 14,474 fds and 272 MB after 26,000 attempts)
    local fds = tonumber(env.sh("ls /proc/" .. client.pid .. "/fd | wc -l"):match("%d+"))
    assert.is_true(fds < 64, fds .. " fds open after " .. attempts() .. " attempts")
    if client:count("relay_connect_failed") > 0 then
      assert.matches('"event":"relay_connect_failed"[^\n]*closed the tunnel at once: 1001 going away now', client:log())
    end
    assert.equal(0, client:count("timer_error"))
  end)
end)
