/* lua_fs: the file system calls LuaJIT lacks, for relay.fs (lua/relay/fs.lua): a directory's
 * names and mkdir. Through libc here, not through FFI declarations of struct dirent in Lua (whose
 * layout is glibc's and the architecture's). Plus terminate: SIGTERM to this process. */
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lua/bind.h"

static int fail(lua_State *L, const char *what, const char *path, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "cannot %s %s: %s", what, path, strerror(err));
  return 2;
}

static int skip(const char *name) { return strcmp(name, ".") == 0 || strcmp(name, "..") == 0; }

/* Pushes the names of d (without . and ..) as an array; 0, or an errno from readdir. */
static int read_names(lua_State *L, DIR *d) {
  lua_newtable(L);
  int n = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) return errno;
    if (skip(e->d_name)) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
}

/* core.fs_list(dir) -> {name, …} in readdir's order | nil, "cannot read directory DIR: why" */
static int l_fs_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (!d) return fail(L, "read directory", path, errno);
  int err = read_names(L, d); /* a Lua error here (memory) leaks d: no worse than the error */
  closedir(d);
  if (err) return fail(L, "read directory", path, err);
  return 1;
}

/* core.fs_mkdir(path, mode?) -> true (made, or a directory already) | nil, "cannot create …" */
static int l_fs_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
  struct stat st;
  if (mkdir(path, mode) != 0) {
    int err = errno;
    if (err != EEXIST) return fail(L, "create", path, err);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return fail(L, "create", path, ENOTDIR);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.terminate(): ends this process as SIGTERM does (drain, then exit 0). */
static int l_terminate(lua_State *L) {
  (void)L;
  kill(getpid(), SIGTERM);
  return 0;
}

void rh_lua_register_fs(lua_State *L) {
  static const luaL_Reg fns[] = { { "fs_list", l_fs_list }, { "fs_mkdir", l_fs_mkdir },
                                  { "terminate", l_terminate }, { NULL, NULL } };
  luaL_register(L, NULL, fns);
}
