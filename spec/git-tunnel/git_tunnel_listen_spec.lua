-- git-tunnel/server --relay-listen: the relay path on a listener of its own (a private
-- interface, say), registration and the client list on --listen. Real git clones through the
-- relay listener; the same path on --listen is not there.
local helpers = require "helpers"
local env = require "git_tunnel_support"
local cjson = require "cjson"

describe("git tunnel --relay-listen", function()
  local dir, server, relay_side

  setup(function()
    local w = env.git_server()
    dir = w.dir
    server = env.start_server { "--relay-listen=127.0.0.1:0", "--relay-tokens=rt-1" }
    relay_side = server:on("relay")
    env.start_ready_client(server.port, "team-a", env.base_url(w.web))
  end)

  teardown(function() env.stop_all_checked() end)

  local function relay_url(port, path)
    return ("http://alice:secret@127.0.0.1:%d/v1/relay/team-a%s"):format(port, path)
  end

  it("clones through the relay listener, with the relay token beside git's own basic auth", function()
    local out, rc = env.git(("-c 'http.extraHeader=X-Relay-Token: rt-1' clone -q %s %s/c1"):format(
      relay_url(relay_side.port, "/repo.git"), dir))
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(dir .. "/c1/a.txt"))

    local res = relay_side:get("/v1/relay/team-a/repo.git/info/refs?service=git-upload-pack")
    assert.equal(401, res.status)
    assert.matches("X%-Relay%-Token", res.body)
  end)

  it("does not serve the relay path on --listen", function()
    local res = server:get("/v1/relay/team-a/repo.git/info/refs?service=git-upload-pack", { ["X-Relay-Token"] = "rt-1" })
    assert.equal(404, res.status)
    local out, rc = env.git(("-c 'http.extraHeader=X-Relay-Token: rt-1' ls-remote %s"):format(
      relay_url(server.port, "/repo.git")))
    assert.are_not.equal(0, rc)
    assert.matches("not found", out)
  end)

  it("keeps registration and the client list on --listen only", function()
    local res = server:get("/v1/relay/clients", { Authorization = "Bearer tok-2" })
    assert.equal(200, res.status)
    assert.equal("team-a", cjson.decode(res.body).result[1].client_key)
    assert.equal(404, relay_side:get("/v1/relay/clients", { Authorization = "Bearer tok-2" }).status)
    assert.equal(404, relay_side:get("/v1/relay/register", { Authorization = "Bearer tok-1" }).status)
    assert.equal(404, relay_side:get("/metrics").status)
  end)

  it("takes the flag from RELAY_PATH_LISTEN and lists it in --help", function()
    local rc, out = helpers.run { env.server_script, "--help" }
    assert.equal(0, rc)
    assert.matches("%-%-relay%-listen", out)
    assert.matches("RELAY_PATH_LISTEN", out)
    local other = env.track(helpers.start(env.server_script, { flags = { "--tokens=t", "--drain-timeout=1" },
                                                              env = { RELAY_PATH_LISTEN = "127.0.0.1:0" } }))
    local res = other:on("relay"):get("/v1/relay/nobody/x")
    assert.equal(502, res.status)
    assert.matches("no relay client is registered for key 'nobody'", res.body)
    assert.equal(404, other:get("/v1/relay/nobody/x").status)
    -- no clients: an empty JSON array (relay.json.array), not {}
    assert.equal('{"result":[]}', other:get("/v1/relay/clients", { Authorization = "Bearer t" }).body)
  end)
end)

-- issue 20: the client's probe port (0.0.0.0:8080 by default) taken by something else. The error
-- names the flag that moves it, not just the address.
describe("git tunnel client whose probe port is taken", function()
  it("says to set --probe-listen (or PROBE_LISTEN), and --listen when that was given", function()
    local socket = require "socket"
    local taken = assert(socket.bind("127.0.0.1", 0))
    local _, port = taken:getsockname()
    local base = ("timeout 10 %s %s --base-url=http://127.0.0.1:1 --client-key=k --styra-token=t " ..
      "--server-url=ws://127.0.0.1:1/v1/relay/register"):format(helpers.bin(), env.client_script)
    local out, rc = env.sh(("%s --probe-listen=127.0.0.1:%d"):format(base, port))
    assert.is_true(rc ~= 0 and rc ~= 124, "exit status " .. tostring(rc))
    assert.matches("listen 127%.0%.0%.1:" .. port .. ": Address already in use; set another HOST:PORT with " ..
      "%-%-probe%-listen %(or PROBE_LISTEN%)", out)
    out = env.sh(("%s --listen=127.0.0.1:%d"):format(base, port))
    assert.matches("Address already in use; set another HOST:PORT with %-%-listen %(or RELAY_LISTEN%)", out)
    taken:close()
  end)
end)

describe("git tunnel server whose --relay-listen port is taken", function()
  it("names --relay-listen (or RELAY_PATH_LISTEN)", function()
    local socket = require "socket"
    local taken = assert(socket.bind("127.0.0.1", 0))
    local _, port = taken:getsockname()
    local out, rc = env.sh(("timeout 10 %s %s --tokens=t --listen=127.0.0.1:0 --relay-listen=127.0.0.1:%d"):format(
      helpers.bin(), env.server_script, port))
    assert.is_true(rc ~= 0 and rc ~= 124, "exit status " .. tostring(rc))
    assert.matches("listener 'relay': listen 127%.0%.0%.1:" .. port .. ": Address already in use; set another " ..
      "HOST:PORT with %-%-relay%-listen %(or RELAY_PATH_LISTEN%)", out)
    taken:close()
  end)
end)
