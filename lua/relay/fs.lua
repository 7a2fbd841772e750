-- relay.fs: the few file-system calls scripts need and LuaJIT lacks (a directory's names, mkdir)
-- through the C core (core/lua/lua_fs.c), with read and write beside them so that one module
-- answers every such need, each as value | nil, "cannot … PATH: why".
local core = require "relay.core"

local M = {}

-- list(dir) -> sorted array of names (without . and ..) | nil, err
function M.list(dir)
  local names, err = core.fs_list(dir)
  if not names then return nil, err end
  table.sort(names)
  return names
end

-- mkdir(path, mode?) -> true (made, or already a directory) | nil, err. mode defaults to 0755.
function M.mkdir(path, mode) return core.fs_mkdir(path, mode) end

-- read(path) -> the file's bytes | nil, err
function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read " .. err end
  local s, rerr = f:read("*a")
  f:close()
  if not s then return nil, ("cannot read %s: %s"):format(path, tostring(rerr)) end
  return s
end

-- write(path, bytes) -> true | nil, err (a failed write or close is reported, not dropped).
function M.write(path, bytes)
  local f, err = io.open(path, "wb")
  if not f then return nil, "cannot write " .. err end
  local ok, werr = f:write(bytes)
  local closed, cerr = f:close()
  if not ok or not closed then return nil, ("cannot write %s: %s"):format(path, tostring(werr or cerr)) end
  return true
end

return M
