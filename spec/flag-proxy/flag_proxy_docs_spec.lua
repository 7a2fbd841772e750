-- docs/flag-proxy.md's config-directory example, run as written: a directory with one key
-- (stored as its sha256) and one flag, served offline and evaluated. Only `relayhost` becomes the
-- binary under test, /tmp/ff a fresh folder and the page's port 7400 a free one (another checkout's
-- suite may be running it at the same time).
local helpers = require "helpers"

local page = helpers.read_file(helpers.root .. "/docs/flag-proxy.md")

describe("docs/flag-proxy.md", function()
  it("'The config directory' example serves its flag as written", function()
    local from = assert(page:find("\n## The config directory", 1, true), "no config directory section")
    local block = assert(page:match("```sh\n(.-)```", from), "no sh block under it")
    local dir = helpers.tmpdir()
    block = block:gsub("/tmp/ff", dir):gsub("relayhost ", helpers.bin() .. " "):gsub("7400", tostring(helpers.free_port()))
    helpers.write_file(dir .. "/try.sh", "set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" .. block)
    local out = io.popen(("cd %s && timeout 30 bash try.sh 2>%s/err"):format(dir, dir)):read("*a")
    local err = helpers.read_file(dir .. "/err")
    assert.matches('"flag":"dark%-mode"', out, 1, false, err)
    assert.matches('"value":"true"', out, 1, false, err)
  end)
end)

-- --help and the Configuration table say the same about a setting: an operator reading either
-- learns what it does (--target-poll-duration once promised polls that never happen).
describe("docs/flag-proxy.md's Configuration table", function()
  it("says what --help says about --target-poll-duration", function()
    local help = io.popen(helpers.bin() .. " flag-proxy --help 2>&1"):read("*a")
    local said = assert(help:match("%-%-target%-poll%-duration N\n%s+([^\n]-)%s+%[env"), help)
    local row = assert(page:match("\n| `TARGET_POLL_DURATION` | `%-target%-poll%-duration` | `0` | ([^\n]-) |\n"), "no table row")
    assert.are.equal(row:gsub("`", ""), said)
    assert.matches("(default 0)", help, 1, true)
  end)
end)
