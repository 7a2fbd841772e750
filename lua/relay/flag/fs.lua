-- The few file-system calls the offline config needs (LuaJIT has no directory listing).
local ffi = require "ffi"

pcall(ffi.cdef, [[
typedef struct relay_dir relay_dir;
struct relay_dirent { uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type; char d_name[256]; };
relay_dir *opendir(const char *name);
struct relay_dirent *readdir(relay_dir *d);
int closedir(relay_dir *d);
int mkdir(const char *path, unsigned int mode);
int kill(int pid, int sig);
int getpid(void);
]])

local M = {}

-- Names in a directory (without . and ..), sorted; nil plus a message if it cannot be read.
function M.list(path)
  local d = ffi.C.opendir(path)
  if d == nil then return nil, ("cannot read directory %s: %s"):format(path, ffi.string(ffi.C.strerror(ffi.errno()))) end
  local names = {}
  while true do
    local e = ffi.C.readdir(d)
    if e == nil then break end
    local name = ffi.string(e.d_name)
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  ffi.C.closedir(d)
  table.sort(names)
  return names
end

function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

function M.mkdir(path)
  if ffi.C.mkdir(path, tonumber("755", 8)) == 0 or ffi.errno() == 17 then return true end -- 17: EEXIST
  return nil, ("cannot create %s: %s"):format(path, ffi.string(ffi.C.strerror(ffi.errno())))
end

-- Ends the process the way SIGTERM does (drain, exit 0).
function M.terminate() ffi.C.kill(ffi.C.getpid(), 15) end

pcall(ffi.cdef, "char *strerror(int errnum);")
return M
