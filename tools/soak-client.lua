-- Load for tools/soak, one mode per process, until STOP_FILE exists; writes a summary to OUT.
--   luajit tools/soak-client.lua http PORT STOP OUT      keep-alive GET / loop: failures, versions seen
--   luajit tools/soak-client.lua stream PORT STOP OUT    repeated slow /stream downloads: broken ones
local test = require "relay.test"
local mode, port, stop, out = arg[1], tonumber(arg[2]), arg[3], arg[4]
local function stopped() return test.read_file(stop) ~= nil end
local ok_n, failed, versions, last, first_failure = 0, 0, 0, nil, nil
local function note_failure(why)
  failed = failed + 1
  first_failure = first_failure or why
end

if mode == "http" then
  local c = assert(test.connect(port))
  while not stopped() do
    local res, err = c:get("/")
    if res and res.status == 200 then
      ok_n = ok_n + 1
      if res.body ~= last then versions, last = versions + 1, res.body end
    else
      note_failure(res and ("status " .. res.status) or err)
      c:close()
      c = assert(test.connect(port))
    end
  end
  c:close()
else -- stream: each download must arrive whole
  while not stopped() do
    local c = assert(test.connect(port, nil, 30))
    local res, err = c:get("/stream?n=40")
    if res and res.status == 200 and #res.body == 40 * 65536 then ok_n = ok_n + 1
    else note_failure(res and ("status " .. res.status .. ", " .. #res.body .. " bytes") or err) end
    c:close()
  end
end
test.write_file(out .. ".tmp", ("ok=%d\nfailed=%d\nversions=%d\nfirst_failure=%s\n"):format(
  ok_n, failed, versions, tostring(first_failure)))
os.rename(out .. ".tmp", out)
