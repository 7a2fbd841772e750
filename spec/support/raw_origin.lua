-- The recording origin (spec/fixtures/raw_origin.lua, its own process) for hostile-input specs:
--   local origin = require("raw_origin").start()
--   origin.port; origin:take(settle) -> the bytes of each connection accepted since the last
--   take; origin:heads(settle) -> the same, each cut to its request head; origin:stop()
--   M.reply(mount, fields[, status]) -> the path under mount that makes it answer that head;
--   M.fields_named(res, name) -> the values of a response's fields of that name, in order
local helpers = require "helpers"

local Origin = {}
Origin.__index = Origin

local M = {}

function M.start()
  local dir = helpers.tmpdir()
  os.execute(("luajit %q %q >%q 2>&1 & echo $! >%q"):format(helpers.fixture("raw_origin.lua"), dir,
    dir .. "/out", dir .. "/pid"))
  local port = tonumber(helpers.wait_until(function()
    return (helpers.read_file(dir .. "/port") or ""):match("%d+")
  end, 5, "the origin's port"))
  local pid = tonumber((helpers.read_file(dir .. "/pid") or ""):match("%d+"))
  return setmetatable({ dir = dir, port = port, pid = pid, seen = 0 }, Origin)
end

function Origin:stop() os.execute("kill " .. self.pid .. " 2>/dev/null") end

-- The bytes of each connection accepted since the last call (after `settle` seconds, so that
-- what is on its way is recorded).
function Origin:take(settle)
  helpers.sleep(settle or 0.2)
  local out = {}
  while true do
    local data = helpers.read_file(("%s/conn-%d"):format(self.dir, self.seen + 1))
    if not data then break end
    self.seen = self.seen + 1
    out[#out + 1] = data
  end
  return out
end

-- The request head of each connection since the last take (the bytes up to the blank line).
function Origin:heads(settle)
  local out = {}
  for _, conn in ipairs(self:take(settle)) do out[#out + 1] = conn:match("^(.-\r\n\r\n)") or conn end
  return out
end

local function enc(s) return (s:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)) end

-- The path that makes the origin answer with these fields (a whole response, Connection: close).
function M.reply(mount, fields, status)
  local raw = ("HTTP/1.1 %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n"):format(status or "200 OK", fields or "")
  return mount .. "/reply?r=" .. enc(raw)
end

function M.fields_named(res, name)
  local out = {}
  for _, f in ipairs(res.raw_headers) do if f[1]:lower() == name then out[#out + 1] = f[2] end end
  return out
end

return M
