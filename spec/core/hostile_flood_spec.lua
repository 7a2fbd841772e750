-- Floods against the HTTP server, each held to a stated memory bound (helpers.flood: checked in
-- the plain build; under ASan only that the host lives and a probe keeps being answered).
local helpers = require "helpers"
local socket = require "socket"
local support = require "hostile_support"

local BOUND_KB = 32 * 1024

-- A pool of connections that each keep sending `next_bytes()` until the host answers or closes
-- them, when a new one takes the place (and sends `opening` first). Returns the flood's step, a
-- counter of connections the host has cut, and a function closing the pool.
local function sender_pool(host, n, opening, next_bytes)
  local pool, cut = {}, { n = 0 }
  local function open()
    local c = assert(helpers.connect(host.port, nil, 1))
    c.sock:settimeout(0)
    c.pending = opening
    return c
  end
  for i = 1, n do pool[i] = open() end
  local function step()
    for i, c in ipairs(pool) do
      if c.pending == "" then c.pending = next_bytes() end
      local last, err, plast = c.sock:send(c.pending)
      c.pending = c.pending:sub((last or plast or 0) + 1)
      local data, rerr, partial = c.sock:receive(1)
      if err == "closed" or rerr == "closed" or data or (partial and #partial > 0) then
        c:close()
        cut.n = cut.n + 1
        pool[i] = open()
      end
    end
    socket.sleep(0.01)
  end
  return step, cut, function() for _, c in ipairs(pool) do c:close() end end
end

local function hello_probe(host)
  return function()
    local res = host:get("/hello")
    return res ~= nil and res.status == 200
  end
end

describe("floods against the HTTP server", function()
  local script
  setup(function() script = support.script_file() end)

  it("8 slow readers of a 256 MiB response each: RSS stays within +32 MB, others are served", function()
    local host = helpers.start(script, { flags = { "--send-timeout", "10" } })
    local readers, got = {}, 0
    for i = 1, 8 do
      readers[i] = host:client(5)
      readers[i]:send("GET /big/256 HTTP/1.1\r\nHost: x\r\n\r\n")
      readers[i].sock:settimeout(0)
    end
    local peak = helpers.flood(host, { seconds = 4, bound_kb = BOUND_KB, probe = hello_probe(host), step = function()
      for _, c in ipairs(readers) do -- 16 KiB per reader per turn: far slower than the host writes
        local data, _, partial = c.sock:receive(16 * 1024)
        got = got + #(data or partial or "")
      end
      socket.sleep(0.02)
    end })
    assert.is_true(got > 0, "the slow readers got nothing")
    assert.is_true(got < 8 * 256 * 1024 * 1024)
    for _, c in ipairs(readers) do c:close() end
    print(("slow readers: RSS peak +%d kB (bound %d kB), %d bytes read"):format(peak, BOUND_KB, got))
    assert.equal(0, host:stop())
  end)

  it("endless header lines on 32 connections: each is cut at 431, RSS stays within +32 MB", function()
    local host = helpers.start(script)
    local line = "X-Pad: " .. ("p"):rep(500) .. "\r\n"
    local step, closed, close_all = sender_pool(host, 32, "GET /hello HTTP/1.1\r\nHost: x\r\n",
      function() return line end)
    local peak = helpers.flood(host, { seconds = 4, bound_kb = BOUND_KB, probe = hello_probe(host), step = step })
    close_all()
    assert.is_true(closed.n >= 1, "no connection was cut")
    assert.matches('"status":431', host:log())
    print(("endless headers: RSS peak +%d kB, %d connections cut"):format(peak, closed.n))
    assert.equal(0, host:stop())
  end)

  it("endless chunks and endless trailers: cut at 413 and 431, RSS stays within +32 MB", function()
    local host = helpers.start(script)
    local chunk = ("8000\r\n%s\r\n"):format(("c"):rep(32768)) -- to the route's 1 MiB in 32 turns
    local head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    local chunks, closed_c, close_c = sender_pool(host, 8, head, function() return chunk end)
    local trailer = "X-T: " .. ("t"):rep(500) .. "\r\n"
    local trailers, closed_t, close_t = sender_pool(host, 16, head .. "1\r\na\r\n0\r\n", function() return trailer end)
    local peak = helpers.flood(host, { seconds = 4, bound_kb = BOUND_KB, probe = hello_probe(host),
      step = function() chunks(); trailers() end })
    close_c()
    close_t()
    -- every flood connection reaches its limit within the flood's time on a quiet machine; on a
    -- busy one fewer turns run, so only that the limits cut them at all is asserted
    assert.is_true(closed_c.n >= 1, "no chunk flood was cut")
    assert.is_true(closed_t.n >= 1, "no trailer flood was cut")
    assert.matches('"status":413', host:log())
    assert.matches("request trailers too large", host:log())
    print(("endless chunks/trailers: RSS peak +%d kB, %d + %d connections cut"):format(peak, closed_c.n, closed_t.n))
    assert.equal(0, host:stop())
  end)
end)
