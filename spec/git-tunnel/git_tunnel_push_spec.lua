-- A big git push through the tunnel (200 MB of incompressible data by default,
-- GIT_TUNNEL_PUSH_MB to change it) with the RSS of both relay processes sampled throughout:
-- the body streams under the tunnel's credit windows, so neither end buffers it. Under ASan
-- (whose quarantine keeps freed memory) the push is smaller and RSS is not bounded.
local helpers = require "helpers"
local env = require "git_tunnel_support"

local asan = env.sh("ldd " .. helpers.bin() .. " | grep -c libasan") ~= "0\n"
local mb = tonumber(os.getenv("GIT_TUNNEL_PUSH_MB") or (asan and 50 or 200))

describe("git tunnel push", function()
  local dir, web, server, client

  setup(function()
    local w = env.world("big")
    dir, web, server, client = w.dir, w.web, w.server, w.client
  end)

  teardown(function()
    env.stop_all_checked()
    os.execute("rm -rf " .. dir .. "/work " .. dir .. "/repos")
  end)

  it(("pushes %d MB with flat memory on both ends"):format(mb), function()
    local work = dir .. "/work"
    local out, rc = env.git(("clone -q %s %s && head -c %d /dev/urandom > %s/blob.bin"):format(
      env.url(server, "big", "/repo.git"), work, mb * 1000000, work))
    assert.equal(0, rc, out)
    out, rc = env.commit(work, "blob.bin", "blob")
    assert.equal(0, rc, out)
    local before = { env.rss_kb(server.pid), env.rss_kb(client.pid) }
    -- sample both RSS every 50 ms until the push ends
    os.execute(("sh -c 'while [ ! -e %s/done ]; do for p in %d %d; do grep VmRSS /proc/$p/status; done; sleep 0.05; done' " ..
                "> %s/rss.log 2>/dev/null &"):format(dir, server.pid, client.pid, dir))
    local t0 = require("socket").gettime()
    out, rc = env.git(("-C %s push -q origin HEAD:refs/heads/big"):format(work))
    local took = require("socket").gettime() - t0
    helpers.write_file(dir .. "/done", "")
    assert.equal(0, rc, out)
    local size = env.must(("git --git-dir=%s/repos/repo.git cat-file -s big:blob.bin"):format(dir))
    assert.equal(mb * 1000000, tonumber(size))
    local peak, i = { 0, 0 }, 0
    for kb in (helpers.read_file(dir .. "/rss.log") or ""):gmatch("VmRSS:%s*(%d+)") do
      local k = i % 2 + 1
      peak[k] = math.max(peak[k], tonumber(kb))
      i = i + 1
    end
    print(("\n%d MB push in %.1f s; RSS server %d -> %d kB peak, client %d -> %d kB peak"):format(
      mb, took, before[1], peak[1], before[2], peak[2]))
    assert.is_true(i > 10, "too few RSS samples")
    if not asan then
      assert.is_true(peak[1] - before[1] < 48 * 1024, "server RSS grew by " .. (peak[1] - before[1]) .. " kB")
      assert.is_true(peak[2] - before[2] < 48 * 1024, "client RSS grew by " .. (peak[2] - before[2]) .. " kB")
    end
  end)
end)
