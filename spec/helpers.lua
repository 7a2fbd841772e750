-- The repo's spec helpers: relay.test (what script authors use too) plus fixture paths.
local test = require "relay.test"

local helpers = setmetatable({}, { __index = test })

local root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers%.lua$")) or "."
helpers.root = root
function helpers.fixture(name) return root .. "/spec/fixtures/" .. name end

return helpers
