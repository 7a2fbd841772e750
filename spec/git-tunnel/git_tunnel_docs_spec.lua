-- docs/git-tunnel.md's "Try it" block, run as written: lighttpd with git http-backend, the
-- relay-server and relay-client, and a clone through the tunnel. Only `relayhost` becomes the
-- binary under test, /tmp/gt a fresh folder and the page's ports (8480, 8481, 8490) free ones
-- (another checkout's suite may be running it at the same time).
local helpers = require "helpers"

local page = helpers.read_file(helpers.root .. "/docs/git-tunnel.md")

describe("docs/git-tunnel.md", function()
  it("'Try it' clones a repository through the tunnel as written", function()
    local from = assert(page:find("\n## Try it", 1, true), "no '## Try it' section")
    local block = assert(page:match("```sh\n(.-)```", from), "no sh block under 'Try it'")
    local dir = helpers.tmpdir()
    block = block:gsub("/tmp/gt", dir):gsub("relayhost ", helpers.bin() .. " ")
    for _, port in ipairs({ "8480", "8481", "8490" }) do block = block:gsub(port, tostring(helpers.free_port())) end
    -- the block's background processes end with the script, whatever happens
    local script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" .. block
    helpers.write_file(dir .. "/try.sh", script)
    local out = io.popen(("cd %s && timeout 60 bash try.sh 2>%s/err"):format(dir, dir)):read("*a")
    -- the hosts print their banners on the same stdout; the clone's README comes last
    assert.matches("\nhello\n$", out, 1, false, helpers.read_file(dir .. "/err"))
  end)
end)
