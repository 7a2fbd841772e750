-- Which client keys a registration token may take (issue 15, item 5): `--tokens-file` binds a
-- token to keys (`token key1,key2`, `token *`), a bare token keeps working (any key) with a
-- warning at start naming where it was given, and a key held under one token cannot be joined
-- under another.
local helpers = require "helpers"
local env = require "git_tunnel_support"
local peer = require "git_tunnel_peer"

describe("git tunnel tokens bound to client keys", function()
  local dir, server

  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/tokens", table.concat({
      "# team tokens", "tok-a team-a", "tok-b team-b, team-b2", "tok-any *", "tok-old", "" }, "\n"))
    server = env.start_server({ "--tokens-file=" .. dir .. "/tokens" })
  end)
  teardown(function() env.stop_all_checked() end)

  it("refuses a key the token is not bound to, 403, and logs it", function()
    local p, status = peer.register(server.port, "tok-b", "team-a")
    assert.is_nil(p)
    assert.matches("^HTTP/1.1 403", status)
    assert.matches('"event":"relay_register_refused"[^\n]*team%-a', server:log())
    local ok = assert(peer.register(server.port, "tok-b", "team-b2"))
    ok:close()
  end)

  it("refuses a key already registered under another token, 409, even for a * token", function()
    local a = assert(peer.register(server.port, "tok-a", "team-a"))
    local p, status = peer.register(server.port, "tok-any", "team-a")
    assert.is_nil(p)
    assert.matches("^HTTP/1.1 409", status)
    p, status = peer.register(server.port, "tok-old", "team-a")
    assert.is_nil(p)
    assert.matches("^HTTP/1.1 409", status)
    -- a second replica under the same token joins
    local a2 = assert(peer.register(server.port, "tok-a", "team-a"))
    a:close()
    a2:close()
    assert.matches('relay_server_registrations_refused_total{reason="key_conflict"} 2', server:get("/metrics").body)
  end)

  it("lets a * token and a bare token register any free key, warning at start about the bare ones", function()
    local p = assert(peer.register(server.port, "tok-any", "whatever"))
    p:close()
    p = assert(peer.register(server.port, "tok-old", "another"))
    p:close()
    local warn = server:log():match('[^\n]*"event":"relay_tokens_unbound"[^\n]*')
    assert.is_truthy(warn)
    assert.matches("tokens:5", warn)          -- the bare line of the file, by its place
    assert.matches("%-%-tokens", warn)        -- the --tokens list the spec server also has
    assert.is_nil(warn:find("tok-old", 1, true)) -- never the secret itself
  end)

  it("refuses a tokens file that binds a malformed key", function()
    helpers.write_file(dir .. "/bad-tokens", "tok-x bad key!\n")
    local out, rc = env.sh(("timeout 10 %s %s --tokens-file=%s/bad-tokens --listen=127.0.0.1:0"):format(
      helpers.bin(), env.server_script, dir))
    assert.is_true(rc ~= 0 and rc ~= 124, "exit status " .. tostring(rc))
    assert.matches("bad%-tokens:1: bad client key 'key!'", out)
  end)
end)
