-- TLS both ways: the host's HTTPS listener (--tls-cert/--tls-key) and https:// upstreams for
-- relay.proxy, verified against a CA file; failures answer clearly.
local helpers = require "helpers"
local cjson = require "cjson"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, (ok and 0 or code)
end

describe("TLS", function()
  local dir, upstream, proxy

  setup(function()
    dir = helpers.tmpdir()
    local _, rc = sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 " ..
      "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"):format(dir, dir))
    assert.equal(0, rc)
    upstream = helpers.start(helpers.fixture("upstream.lua"),
      { listen = "0.0.0.0:0", flags = { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" } })
    helpers.write_file(dir .. "/proxy.lua", ([[
local relay = require "relay"
local app = relay.new { name = "tls-proxy" }
local up = "https://localhost:%d"
app:mount("/trusted", relay.proxy { target_base_url = up, ca_file = %q })
app:mount("/untrusted", relay.proxy { target_base_url = up })
app:mount("/wrongname", relay.proxy { target_base_url = "https://127.0.0.2:%d", ca_file = %q })
app:get("/fetch", function(req, res)
  local r, err = relay.http.request { url = up .. "/via-client", ca_file = req.args.ca ~= "no" and %q or nil }
  if not r then return res:send(502, err) end
  res:send(r.status, r.body)
end)
return app
]]):format(upstream.port, dir .. "/cert.pem", upstream.port, dir .. "/cert.pem", dir .. "/cert.pem"))
    proxy = helpers.start(dir .. "/proxy.lua", { flags = { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" } })
  end)

  teardown(function()
    assert.equal(0, proxy:stop())
    assert.equal(0, upstream:stop())
  end)

  local function curl(host, path, extra)
    local out = sh(("curl -s --cacert %s/cert.pem -w '\\n%%{http_code}' %s https://localhost:%d%s"):format(
      dir, extra or "", host.port, path))
    local body, code = out:match("^(.*)\n(%d+)$")
    return tonumber(code), body
  end

  it("serves HTTPS on --tls-cert/--tls-key, and reports https to handlers", function()
    local code, body = curl(upstream, "/some/path?q=1")
    assert.equal(200, code)
    assert.equal("/some/path?q=1", cjson.decode(body).target)
  end)

  it("answers plain HTTP on the TLS port with a clear 400", function()
    local res = upstream:get("/x")
    assert.equal(400, res.status)
    assert.matches("This port speaks HTTPS", res.body)
    assert.matches('"event":"tls_error"', upstream:log())
  end)

  it("proxies to an https upstream verified against ca_file, with X-Forwarded-Proto https", function()
    local code, body = curl(proxy, "/trusted/hello", "-H 'X-Test: 1'")
    assert.equal(200, code)
    local got = cjson.decode(body)
    assert.equal("/hello", got.target)
    assert.same({ "https" }, got.headers["x-forwarded-proto"])
    assert.same({ "localhost:" .. upstream.port }, got.headers.host)
    -- pooled TLS connections carry on
    for _ = 1, 5 do assert.equal(200, (curl(proxy, "/trusted/again"))) end
    -- a large body both ways over TLS on both hops
    local big = dir .. "/big.bin"
    sh(("head -c 2000000 /dev/urandom > %s"):format(big))
    local c2, b2 = curl(proxy, "/trusted/up", "--data-binary @" .. big)
    assert.equal(200, c2)
    assert.equal(2000000, cjson.decode(b2).body_length)
    local c3, b3 = curl(proxy, "/trusted/bytes?n=3000000")
    assert.equal(200, c3)
    assert.equal(3000000, #b3)
  end)

  it("relay.http.request speaks https, verified against ca_file, and says why when it cannot", function()
    local code, body = curl(proxy, "/fetch")
    assert.equal(200, code)
    assert.equal("/via-client", cjson.decode(body).target)
    local code2, body2 = curl(proxy, "/fetch?ca=no")
    assert.equal(502, code2)
    assert.matches("^TLS: certificate verify failed: self%-signed certificate", body2)
  end)

  it("502 naming the reason when the upstream's certificate does not verify", function()
    local code, body = curl(proxy, "/untrusted/x")
    assert.equal(502, code)
    assert.matches("^Upstream error: TLS: certificate verify failed: self%-signed certificate", body)
    local code2, body2 = curl(proxy, "/wrongname/x")
    assert.equal(502, code2)
    assert.matches("certificate verify failed: IP address mismatch", body2)
    assert.matches('"event":"upstream_error"[^\n]*certificate verify failed', proxy:log())
  end)
end)
