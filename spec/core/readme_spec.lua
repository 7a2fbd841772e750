-- README's quick starts, run as written: the ```sh blocks under "The prefix proxy", "The flag
-- proxy" and "The workspace relay" are read from README.md itself, so an edit that breaks a
-- command breaks this spec. Only `relayhost` / `tools/run` become the binary under test (README
-- assumes it on PATH) and the `kill -HUP <pid>` placeholder is left out. The ports are README's
-- own (8080, 7000, 7781, 9001): no other spec uses them.
local helpers = require "helpers"

local readme = helpers.read_file(helpers.root .. "/README.md")

-- The first ```sh block after the heading: its commands, continuation lines joined, comments
-- and blank lines dropped.
local function commands(heading)
  local from = assert(readme:find("\n## " .. heading .. "\n", 1, true), "README has no '## " .. heading .. "'")
  local block = assert(readme:match("```sh\n(.-)```", from), "no sh block under " .. heading)
  local out, acc = {}, ""
  for line in block:gmatch("([^\n]*)\n") do
    line = line:gsub("%s+#.*$", "")
    if line:match("\\$") then
      acc = acc .. line:sub(1, -2) .. " "
    else
      line = acc .. line
      acc = ""
      if line:match("%S") and not line:match("^#") then out[#out + 1] = line end
    end
  end
  return out
end

local bin = helpers.bin()
local function as_run(cmd)
  cmd = cmd:gsub("^tools/run ", bin .. " "):gsub("^relayhost ", bin .. " "):gsub(" relayhost ", " " .. bin .. " ")
  return cmd
end

-- A process group with a live (not zombie) member.
local function group_alive(pgid)
  return os.execute(("ps -e -o pgid=,stat= | awk -v g=%d '$1 == g && $2 !~ /^Z/ { n++ } END { exit !n }'"):format(pgid)) == 0
end

-- Starts a README server line in a process group of its own; returns its stopper.
local function serve(cmd, port)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/run.sh", ("cd %q\n%s\n"):format(helpers.root, as_run(cmd)))
  os.execute(("setsid sh %s/run.sh >%s/out 2>&1 & echo $! >%s/pid"):format(dir, dir, dir))
  local pgid = tonumber(helpers.wait_until(function() return (helpers.read_file(dir .. "/pid") or ""):match("%d+") end, 5))
  local ok = pcall(helpers.wait_until, function()
    local c = helpers.connect(port)
    if c then c:close() return true end
  end, 10)
  if not ok then os.execute(("kill -KILL -%d 2>/dev/null"):format(pgid)) end
  assert(ok, ("README's command did not serve on %d: %s\n%s"):format(port, cmd, helpers.read_file(dir .. "/out") or ""))
  return function()
    os.execute(("kill -TERM -%d 2>/dev/null"):format(pgid))
    helpers.wait_until(function() return not group_alive(pgid) end, 10, "README's server to stop")
    local out = helpers.read_file(dir .. "/out") or ""
    assert.not_matches("Sanitizer", out) -- the ASan tree runs this too: a leak shows here
    assert.matches('"event":"stopped"', out)
  end
end

-- Runs README lines in one shell (variables carry from line to line); returns the output.
local function shell(lines)
  local script = helpers.tmpdir() .. "/lines.sh"
  helpers.write_file(script, table.concat(lines, "\n") .. "\n")
  local p = io.popen(("cd %q && sh -e %s 2>&1"):format(helpers.root, script))
  local out = p:read("*a")
  p:close()
  return out
end

describe("README quick starts", function()
  it("prefix proxy: /api/users?id=1 reaches the upstream as /v1/users?id=1", function()
    local cmds = commands("The prefix proxy")
    assert.equal(1, #cmds)
    local upstream_script = helpers.tmpdir() .. "/upstream.lua"
    helpers.write_file(upstream_script, [[
local relay = require "relay"
local app = relay.new { name = "upstream" }
app:any("/*", function(req, res) res:send(200, "upstream saw " .. req.method .. " " .. req.target) end)
return app
]])
    local upstream = helpers.start(upstream_script, { listen = "127.0.0.1:9001" })
    local stop = serve(cmds[1], 8080)
    local res = helpers.connect(8080):get("/api/users?id=1")
    assert.equal(200, res.status)
    assert.equal("upstream saw GET /v1/users?id=1", res.body)
    stop()
    assert.equal(0, upstream:stop())
  end)

  it("flag proxy: offline, a token from /client/auth, then the environment's feature configs", function()
    local cmds = commands("The flag proxy")
    assert.matches("%-%-offline", cmds[1])
    local stop = serve(cmds[1], 7000)
    local rest = {}
    for i = 2, #cmds do
      if not cmds[i]:match("<pid>") then rest[#rest + 1] = cmds[i] end
    end
    assert.equal(2, #rest)
    local out = shell(rest)
    assert.matches('"environment":"sample"', out)
    assert.matches('"feature":"', out)
    stop()
  end)

  it("workspace relay: /health and the admin /state with the original's variables", function()
    local cmds = commands("The workspace relay")
    assert.equal(3, #cmds)
    local stop = serve(cmds[1], 7781)
    local out = shell { cmds[2] }
    assert.matches('"ok":true', out)
    assert.matches('"service":"relay"', out)
    out = shell { cmds[3] }
    assert.matches('"workspaces":%[%]', out)
    stop()
  end)
end)

-- Benchmark figures live in README's "Benchmarks", dated, and nowhere else: docs/ once gave
-- other req/s for the same bench than README did. A docs page may point there, not restate.
describe("benchmark figures", function()
  it("are given in README alone", function()
    for _, page in ipairs({ "operations", "flag-proxy", "workspace-relay", "git-tunnel", "security" }) do
      local text = helpers.read_file(helpers.root .. "/docs/" .. page .. ".md") or ""
      local figure = text:match("[%d,.]+ ?req/s") or text:match("[%d,.]+ ?requests/s")
      assert.is_nil(figure, ("docs/%s.md gives its own figure '%s'"):format(page, tostring(figure)))
    end
  end)
end)
