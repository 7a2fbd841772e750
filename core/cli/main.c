/* relayhost: the command line and the process lifecycle.
 *
 *   relayhost SCRIPT [flags]         serve
 *   relayhost check SCRIPT [flags]   load and initialise the script, serve nothing
 *   relayhost reload --pid-file F    SIGHUP the host in F and report that reload's outcome
 *   relayhost upgrade --pid-file F   SIGUSR2: the binary on disk takes over the listeners
 *   relayhost --version | --help */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <lauxlib.h>

#include "cache/dict.h"
#include "cli/banner.h"
#include "cli/admin.h"
#include "cli/dryrun.h"
#include "cli/notify.h"
#include "cli/reload.h"
#include "cli/upgrade.h"
#include "cli/workers.h"
#include "http/server.h"
#include "log/log.h"
#include "lua/gen.h"
#include "lua/runtime.h"
#include "metrics/metrics.h"
#include "net/cidr.h"
#include "net/net.h"
#include "net/pool.h"
#include "net/url.h"
#include "tls/tls.h"

typedef struct {
  char *script;
  int argc;
  char **argv;
  rh_host_settings settings;
  rh_http_server *server, *admin;
  rh_http_server *extra[RH_MAX_LISTENERS]; /* the script's app:listener listeners */
  int nextra;
  rh_cidr_list *trusted;
  rh_tls_ctx *tls;
  uv_signal_t sighup, sigterm, sigint, sigusr2;
  uv_timer_t shutdown_timer, upgrade_timer, reload_timer;
  rh_upgrade up;           /* a binary upgrade in flight */
  int upgraded;            /* it succeeded: we drain for it */
  rh_dryrun check;         /* a reload's rehearsal in a child (dryrun.h) */
  rh_reload_ids ids;       /* the `relayhost reload` requests it answers */
  int reload_again;        /* a SIGHUP came while it ran */
  double reload_timeout, upgrade_timeout;
  int stopping;
  unsigned reload_seq;
  int worker;              /* --workers: this worker's index; -1 in a single process */
  int chan_fd;             /* --workers: this worker's end of the channel to the parent */
  uv_pipe_t chan;
  char chan_buf[256];
  size_t chan_len;
} host;

static host H = { .worker = -1, .up = RH_UPGRADE_NONE, .chan_fd = -1 };

static void announce(const char *addr);
static void bound_address(const char *addr, rh_http_server *srv, char *out, size_t len);
static void announce_listeners(void);
static void now_serving(void);
static void cleanup(void);
static rh_metric *m_reload_failures, *m_reloads, *m_reload_seconds;

/* The personalities under scripts/ (spec/core/usage_spec.lua keeps this list and the folder equal). */
#define BUNDLED "demo, prefix-proxy, flag-proxy, git-tunnel/server, git-tunnel/client, workspace-relay"

static void usage(FILE *to) {
  fprintf(to,
          "usage: relayhost SCRIPT [flags]        serve SCRIPT: a path, or a bundled name\n"
          "                                       (" BUNDLED ")\n"
          "       relayhost check SCRIPT [flags]  load and initialise SCRIPT without serving\n"
          "       relayhost reload --pid-file F   reload the host in F and report the outcome\n"
          "       relayhost upgrade --pid-file F  hand the listeners to the binary on disk, drain\n"
          "       relayhost SCRIPT --help         the flags SCRIPT declares, and the host's\n"
          "       relayhost [flags]               with $RELAYHOST_SCRIPT set: serve that script\n"
          "       relayhost --version\n");
}

static void first_line(const char *msg, FILE *to) {
  const char *nl = strchr(msg, '\n');
  fprintf(to, "%.*s\n", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
}

/* Frees a generation that never served (check, --help): its handles close on the loop. */
static void discard(rh_gen *g) {
  rh_gen_activate(g, 0);
  rh_gen_shutdown();
  uv_run(rh_loop(), UV_RUN_DEFAULT);
}

/* Loads the script into a new generation. With --help it prints the help text and returns
 * NULL with *err NULL. */
static rh_gen *build(rh_host_settings *s, char **err) {
  *err = NULL;
  rh_gen *g = rh_gen_build(H.script, H.argc, H.argv, s, err);
  if (g && s->help) {
    fputs(s->help_text, stdout);
    discard(g);
    return NULL;
  }
  return g;
}

static void register_metrics(void) {
  const char *e;
  m_reload_failures = rh_metric_register(RH_COUNTER, "relayhost_reload_failures_total",
                                         "Reloads rejected because the script failed to load",
                                         NULL, 0, NULL, 0, &e);
  m_reloads = rh_metric_register(RH_COUNTER, "relayhost_reloads_total",
                                 "Reloads that replaced the running generation", NULL, 0, NULL, 0, &e);
  m_reload_seconds = rh_metric_register(RH_GAUGE, "relayhost_last_reload_seconds",
                                        "How long the last successful reload took to build",
                                        NULL, 0, NULL, 0, &e);
}

/* ---- reload ---- */

static int same_listeners(const rh_host_settings *a, const rh_host_settings *b) {
  if (a->nlisteners != b->nlisteners) return 0;
  for (int i = 0; i < a->nlisteners; i++)
    if (strcmp(a->listeners[i].name, b->listeners[i].name) || strcmp(a->listeners[i].listen, b->listeners[i].listen))
      return 0;
  return 1;
}

/* A number among the host flags of generation g (--reload-timeout, ...): read from the app the
 * script built, where relay.flags put every host flag. */
static double host_number(rh_gen *g, const char *name, double dflt) {
  lua_State *L = g->L;
  int top = lua_gettop(L);
  double v = dflt;
  if (luaL_loadstring(L, "local app = require('relay')._last_app() return app and app.host[...]") == 0) {
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_isnumber(L, -1)) v = lua_tonumber(L, -1);
  }
  lua_settop(L, top);
  return v;
}

/* The rehearsal's deadline: --reload-timeout, and never past the watchdog, which would end the
 * whole process over a load that ran that long in it. */
static double reload_deadline(void) {
  double w = H.settings.watchdog;
  return w > 0 && w < H.reload_timeout ? w : H.reload_timeout;
}

/* In the rehearsal's child: builds the script and answers with the hash of what it loaded. The
 * generation is not freed: the child ends with _exit, and freeing would run the host's loop. */
static int rehearse(char **out, void *ud) {
  (void)ud;
  uv_loop_fork(rh_loop()); /* its kernel state is the host's: a load that wakes it must not */
  char before[65], after[65];
  rh_host_settings s;
  if (rh_file_hash(H.script, before) < 0) {
    *out = strdup("cannot read the script");
    return -1;
  }
  if (!rh_gen_build(H.script, H.argc, H.argv, &s, out)) return -1;
  if (rh_file_hash(H.script, after) < 0 || strcmp(before, after) != 0) {
    *out = strdup(RH_RELOAD_CHANGED);
    return -1;
  }
  *out = strdup(before);
  return 0;
}

/* The error (the script's file:line and message) at error; a traceback only at debug. */
static void log_reload_failed(const char *err) {
  RH_LOG(RH_LOG_ERROR, "reload_failed", RH_STRN("error", err, rh_log_message_len(err)), RH_STR("script", H.script));
  rh_log_traceback("reload_traceback", err);
}

/* Builds the script in this process, when it is still what the rehearsal checked (hash). NULL
 * once the new generation serves, else why not (malloc'd). Logged and counted here. */
static char *reload_checked(const char *hash) {
  char *err = NULL, now[65];
  rh_host_settings s;
  uv_update_time(rh_loop());
  double t0 = uv_hrtime() / 1e9;
  rh_gen *g = NULL;
  if (rh_file_hash(H.script, now) < 0 || strcmp(now, hash) != 0) err = strdup(RH_RELOAD_CHANGED);
  else g = rh_gen_build(H.script, H.argc, H.argv, &s, &err);
  double took = uv_hrtime() / 1e9 - t0;
  if (!g) {
    rh_metric_add(m_reload_failures, NULL, 1);
    log_reload_failed(err);
    return err;
  }
  free(s.help_text);
  if (strcmp(s.listen, H.settings.listen) != 0)
    RH_LOG(RH_LOG_WARN, "reload_listen_unchanged", RH_STR("listen", H.settings.listen),
           RH_STR("wanted", s.listen), RH_STR("why", "listeners survive reloads; restart to move"));
  if (!same_listeners(&s, &H.settings))
    RH_LOG(RH_LOG_WARN, "reload_listeners_unchanged",
           RH_STR("why", "app:listener listeners survive reloads as bound at start; restart to change them"));
  rh_gen_activate(g, H.settings.drain_timeout);
  rh_metric_add(m_reloads, NULL, 1);
  rh_metric_set(m_reload_seconds, NULL, took);
  RH_LOG(RH_LOG_INFO, "reloaded", RH_INT("generation", rh_gen_id(g)), RH_NUM("ms", rh_log_round(took * 1000, 1)),
         RH_INT("generations_alive", (long long)rh_gen_live()));
  return NULL;
}

/* A rehearsal that failed: nothing was built here. */
static char *rehearsal_failed(char *why) {
  rh_metric_add(m_reload_failures, NULL, 1);
  log_reload_failed(why);
  return why;
}

static void reload_answer(char *err) {
  rh_reload_answer(H.settings.pid_file, &H.ids, ++H.reload_seq, err);
  H.ids.n = 0;
  free(err);
}

static void on_reload_tick(uv_timer_t *t);

/* SIGHUP: the script is rehearsed in a child first (dryrun.h), and loaded here only if that
 * succeeded within the deadline. The loop serves on meanwhile. */
static void reload_begin(void) {
  if (rh_dryrun_running(&H.check)) {
    H.reload_again = 1; /* its requests came after this rehearsal took its own */
    return;
  }
  H.reload_again = rh_reload_take(H.settings.pid_file, &H.ids);
  char *err = NULL;
  if (rh_dryrun_start(&H.check, rehearse, NULL, reload_deadline(), &err) < 0) {
    reload_answer(rehearsal_failed(err));
    return;
  }
  uv_timer_start(&H.reload_timer, on_reload_tick, 5, 5);
}

static void on_reload_tick(uv_timer_t *t) {
  char *res = NULL;
  int rc = rh_dryrun_poll(&H.check, &res);
  if (rc < 0) return;
  uv_timer_stop(t);
  reload_answer(rc == 0 ? reload_checked(res ? res : "") : rehearsal_failed(res));
  if (rc == 0) free(res);
  if (H.reload_again && !H.stopping) {
    H.reload_again = 0;
    reload_begin();
  }
}

/* Shutdown: a rehearsal still running is ended, and whoever waits for it told. */
static void reload_abandon(void) {
  if (!rh_dryrun_running(&H.check)) return;
  rh_dryrun_cancel(&H.check);
  uv_timer_stop(&H.reload_timer);
  reload_answer(strdup("the host is shutting down; nothing was replaced"));
}

/* ---- shutdown ---- */

/* Closing a signal handle restores the default action at once, so a second SIGTERM arriving
 * between the close and SIG_IGN would kill the exit itself (exit 143 seen in CI). The signals stay
 * blocked across both; one pending meanwhile is discarded when its action becomes SIG_IGN. */
static void close_signals(void) {
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  sigaddset(&stop, SIGUSR2);
  sigprocmask(SIG_BLOCK, &stop, &old);
  uv_close((uv_handle_t *)&H.sighup, NULL);
  uv_close((uv_handle_t *)&H.sigterm, NULL);
  uv_close((uv_handle_t *)&H.sigint, NULL);
  uv_close((uv_handle_t *)&H.sigusr2, NULL);
  uv_close((uv_handle_t *)&H.upgrade_timer, NULL);
  uv_close((uv_handle_t *)&H.reload_timer, NULL);
  if (H.worker >= 0) uv_close((uv_handle_t *)&H.chan, NULL);
  if (rh_upgrade_running(&H.up)) close(H.up.ready_fd);
  signal(SIGUSR2, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  sigprocmask(SIG_SETMASK, &old, NULL);
}

static void finish_shutdown(void) {
  if (H.stopping == 2) return;
  H.stopping = 2;
  uv_timer_stop(&H.shutdown_timer);
  uv_close((uv_handle_t *)&H.shutdown_timer, NULL);
  rh_gen_shutdown();
  rh_pool_close_all();
  if (H.server) rh_http_server_free(H.server);
  for (int i = 0; i < H.nextra; i++) rh_http_server_free(H.extra[i]);
  if (H.admin) rh_admin_free(H.admin);
  close_signals();
}

static size_t connections(void) {
  size_t n = H.server ? rh_http_server_connections(H.server) : 0;
  for (int i = 0; i < H.nextra; i++) n += rh_http_server_connections(H.extra[i]);
  return n;
}

/* Polls until the last connection is gone or the drain deadline passes. */
static void on_shutdown_tick(uv_timer_t *t) {
  double deadline = *(double *)t->data;
  if (connections() == 0 || rh_now() >= deadline) finish_shutdown();
}

/* Stops accepting and drains: on SIGTERM/SIGINT, and once a successor serves. */
static void begin_shutdown(const char *why) {
  if (H.stopping) return;
  H.stopping = 1;
  reload_abandon();
  if (!H.upgraded) rh_notify("STOPPING=1"); /* after an upgrade the successor is the service */
  RH_LOG(RH_LOG_INFO, "shutdown", RH_STR("signal", why), RH_NUM("drain_timeout", H.settings.drain_timeout),
         RH_INT("connections", (long long)connections()));
  if (H.server) rh_http_server_stop_accepting(H.server);
  for (int i = 0; i < H.nextra; i++) rh_http_server_stop_accepting(H.extra[i]);
  if (H.admin && H.upgraded) rh_http_server_stop_accepting(H.admin); /* the successor's now */
  rh_runtime_going_away();
  static double deadline;
  deadline = rh_now() + H.settings.drain_timeout;
  H.shutdown_timer.data = &deadline;
  uv_timer_start(&H.shutdown_timer, on_shutdown_tick, 0, 50);
}

static void on_sigterm(uv_signal_t *s, int signum) {
  (void)s;
  begin_shutdown(signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- binary upgrade ---- */

static void on_upgrade_tick(uv_timer_t *t) {
  char err[300];
  int rc = rh_upgrade_poll(&H.up, err, sizeof err);
  if (rc == 0) return;
  uv_timer_stop(t);
  if (rc > 0) {
    rh_upgrade_succeeded(H.settings.pid_file, &H.up);
    H.upgraded = 1;
    begin_shutdown("upgrade");
  } else {
    rh_upgrade_failed(H.settings.pid_file, err);
  }
}

/* SIGUSR2: the listeners go to a new process of the binary on disk; we drain once it serves. */
static void on_sigusr2(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (H.stopping || !H.server) return; /* a run that serves nothing has nothing to hand over */
  if (rh_upgrade_running(&H.up)) {
    rh_upgrade_busy(&H.up); /* one upgrade at a time */
    return;
  }
  int fds[2 + RH_MAX_LISTENERS], n = 0;
  fds[n++] = rh_http_server_fd(H.server);
  for (int i = 0; i < H.nextra; i++) fds[n++] = rh_http_server_fd(H.extra[i]);
  if (H.admin) fds[n++] = rh_http_server_fd(H.admin);
  char err[300];
  if (rh_upgrade_spawn(&H.up, fds, n, NULL, H.upgrade_timeout, err, sizeof err) < 0) {
    rh_upgrade_failed(H.settings.pid_file, err);
    return;
  }
  RH_LOG(RH_LOG_INFO, "upgrade_started", RH_INT("successor", H.up.pid));
  uv_timer_start(&H.upgrade_timer, on_upgrade_tick, 50, 50);
}

static void on_sighup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (!H.stopping) reload_begin();
}

/* ---- serving ---- */

static int apply_settings(rh_host_settings *s) {
  rh_log_level lv;
  if (rh_log_parse_level(s->log_level[0] ? s->log_level : "info", &lv) < 0) {
    fprintf(stderr, "relayhost: --log-level '%s': want debug, info, warn or error\n", s->log_level);
    return -1;
  }
  rh_log_set_level(lv);
  if (rh_log_set_format(s->log_format[0] ? s->log_format : "json") < 0) {
    fprintf(stderr, "relayhost: --log-format '%s': want json or text\n", s->log_format);
    return -1;
  }
  if (!s->tls_cert[0] != !s->tls_key[0]) {
    fprintf(stderr, "relayhost: --tls-cert and --tls-key go together (give both or neither)\n");
    return -1;
  }
  if (s->tls_cert[0]) {
    char err[512];
    H.tls = rh_tls_server_ctx(s->tls_cert, s->tls_key, err, sizeof err);
    if (!H.tls) {
      fprintf(stderr, "relayhost: --tls-cert/--tls-key: %s\n", err);
      return -1;
    }
  }
  if (s->workers < 1 || s->workers > 256) {
    fprintf(stderr, "relayhost: --workers %d: want 1 to 256\n", s->workers);
    return -1;
  }
  return 0;
}

/* The first generation: NULL with *status set when there is nothing to serve (--help: 0, an
 * error printed as file:line: message: 1). */
static rh_gen *load_first(int *status) {
  char *err = NULL;
  rh_gen *g = build(&H.settings, &err);
  *status = err ? 1 : 0;
  if (err) first_line(err, stderr);
  free(err);
  if (!g) uv_run(rh_loop(), UV_RUN_NOWAIT); /* a failed generation's handles close */
  return g;
}

static int serve_generation(rh_gen *g);

/* ---- --workers N ---- */

/* The worker's end of its channel to the parent (workers.c): the parent asks for reloads of what
 * it checked, and its end closing means it is gone. */
static void chan_reply(unsigned seq, const char *err) {
  char line[600];
  int n = err ? snprintf(line, sizeof line, "%u failed %.*s\n", seq, (int)strcspn(err, "\n"), err)
              : snprintf(line, sizeof line, "%u ok\n", seq);
  if (n >= (int)sizeof line) {
    n = (int)sizeof line - 1;
    line[n - 1] = '\n';
  }
  uv_buf_t b = uv_buf_init(line, (unsigned)n);
  uv_try_write((uv_stream_t *)&H.chan, &b, 1);
}

/* "R SEQ HASH": reload, if the script is still what the parent checked. "F": a reload the
 * parent refused, for this worker's metric. */
static void chan_line(const char *line) {
  unsigned seq;
  char hash[65];
  if (strcmp(line, "F") == 0) rh_metric_add(m_reload_failures, NULL, 1);
  if (sscanf(line, "R %u %64s", &seq, hash) != 2) return;
  char *err = H.stopping ? strdup("the worker is shutting down") : reload_checked(hash);
  chan_reply(seq, err);
  free(err);
}

static void chan_alloc(uv_handle_t *h, size_t want, uv_buf_t *b) {
  (void)h;
  (void)want;
  *b = uv_buf_init(H.chan_buf + H.chan_len, (unsigned)(sizeof H.chan_buf - H.chan_len));
}

static void chan_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n < 0) { /* the parent is gone: nobody would restart, reload or stop this worker */
    uv_read_stop(s);
    RH_LOG(RH_LOG_WARN, "parent_exited", RH_INT("worker", H.worker));
    begin_shutdown("parent exited");
    return;
  }
  H.chan_len += (size_t)n;
  char *nl;
  while ((nl = memchr(H.chan_buf, '\n', H.chan_len))) {
    *nl = 0;
    chan_line(H.chan_buf);
    size_t used = (size_t)(nl + 1 - H.chan_buf);
    memmove(H.chan_buf, nl + 1, H.chan_len - used);
    H.chan_len -= used;
  }
  if (H.chan_len == sizeof H.chan_buf) H.chan_len = 0; /* no line of ours is this long */
}

static void chan_start(void) {
  uv_pipe_init(rh_loop(), &H.chan, 0);
  uv_pipe_open(&H.chan, H.chan_fd);
  uv_read_start((uv_stream_t *)&H.chan, chan_alloc, chan_read);
}

static int worker_main(int index, int chan, void *ud) {
  (void)ud;
  uv_loop_fork(rh_loop()); /* the parent's loop state is not ours */
  rh_upgrade_child();
  rh_net_share_ports(1);
  H.worker = index;
  H.chan_fd = chan;
  char listen[sizeof H.settings.listen];
  snprintf(listen, sizeof listen, "%s", H.settings.listen); /* the port the parent picked */
  /* a worker restarted after the script changed loads it unchecked: one that never returns ends
   * it (status 70), to be restarted and logged, instead of leaving it hung and never serving */
  rh_watchdog_start(H.settings.watchdog);
  int status;
  rh_gen *g = load_first(&status);
  if (!g) return status ? status : 1;
  snprintf(H.settings.listen, sizeof H.settings.listen, "%s", listen);
  H.settings.pid_file[0] = 0; /* the parent owns the pid file and the reload outcomes */
  int rc = serve_generation(g);
  cleanup();
  return rc;
}

/* Announces the address once a worker accepts on it, so that whoever reads the line can
 * connect at once. */
static void workers_started(void *ud) {
  (void)ud;
  char err[300];
  struct sockaddr_storage ss;
  rh_banner b;
  if (rh_banner_describe(H.settings.listen, 0, &b) == 0 && rh_listen_resolve(b.reach, &ss, err, sizeof err) == 0) {
    for (int i = 0; i < 100; i++) { /* 5 s at most */
      int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      socklen_t len = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
      int ok = fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) == 0;
      if (fd >= 0) close(fd);
      if (ok) break;
      usleep(50 * 1000);
    }
  }
  announce_listeners();
  announce(H.settings.listen);
  now_serving();
}

static int supervise(rh_gen *g) {
  discard(g); /* the parent only checked that the script loads */
  char listen[sizeof H.settings.listen];
  /* after an upgrade: the port our predecessor picked (the same when one was given) */
  const char *kept = getenv("RELAYHOST_UPGRADE_LISTEN");
  if (rh_pick_port(kept ? kept : H.settings.listen, listen, sizeof listen) < 0) {
    fprintf(stderr, "relayhost: --listen %s: cannot bind it\n", H.settings.listen);
    return 1;
  }
  snprintf(H.settings.listen, sizeof H.settings.listen, "%s", listen);
  if (H.settings.pid_file[0] && rh_pid_file_write(H.settings.pid_file) < 0) {
    fprintf(stderr, "relayhost: --pid-file %s: %s\n", H.settings.pid_file, strerror(errno));
    return 1;
  }
  unsetenv("RELAYHOST_UPGRADE_LISTEN");
  static char keep[sizeof listen + 32];
  snprintf(keep, sizeof keep, "RELAYHOST_UPGRADE_LISTEN=%s", listen);
  const char *upgrade_env[] = { keep, NULL };
  rh_workers w = { H.settings.workers, worker_main, rehearse, H.settings.pid_file, workers_started,
                   upgrade_env, reload_deadline(), H.upgrade_timeout, NULL };
  int rc = rh_workers_supervise(&w);
  if (H.settings.pid_file[0]) rh_pid_file_remove(H.settings.pid_file);
  RH_LOG(RH_LOG_INFO, "stopped", RH_INT("pid", getpid()));
  return rc;
}

static int serve(void) {
  int status;
  rh_gen *g = load_first(&status);
  if (!g) return status;
  H.reload_timeout = host_number(g, "reload-timeout", 5);
  H.upgrade_timeout = host_number(g, "upgrade-timeout", 10);
  char msg[300];
  if (H.settings.pid_file[0] && rh_pid_file_check(H.settings.pid_file, rh_upgrade_predecessor(), msg, sizeof msg) < 0) {
    fprintf(stderr, "relayhost: --pid-file %s: %s\n", H.settings.pid_file, msg);
    discard(g);
    return 1;
  }
  if (apply_settings(&H.settings) < 0) return 1;
  register_metrics();
  if (H.settings.workers > 1) return supervise(g);
  return serve_generation(g);
}

/* Binds --listen, the script's listeners and --admin-listen. -1 with the reason printed. A script
 * that serves nothing this run (relay.new{listen = false}: a one-shot job) binds none. */
static int start_listeners(const rh_http_limits *base) {
  char msg[512];
  rh_http_limits lim = *base;
  rh_http_handlers hs = { rh_runtime_on_request, rh_runtime_on_body, rh_runtime_on_drain,
                          rh_runtime_on_abort, NULL };
  if (!H.settings.listen[0]) return 0;
  H.server = rh_http_server_start(rh_loop(), H.settings.listen, &lim, &hs, msg, sizeof msg);
  if (!H.server) {
    /* named where the address is set: a default that is taken is the user's to move */
    fprintf(stderr, "relayhost: %s; set another HOST:PORT with %s\n", msg,
            H.settings.listen_from[0] ? H.settings.listen_from : "--listen (or RELAY_LISTEN)");
    return -1;
  }
  for (int i = 0; i < H.settings.nlisteners; i++) {
    const rh_listener_setting *ls = &H.settings.listeners[i];
    lim.name = ls->name;
    H.extra[i] = rh_http_server_start(rh_loop(), ls->listen, &lim, &hs, msg, sizeof msg);
    if (!H.extra[i]) {
      fprintf(stderr, "relayhost: listener '%s': %s%s%s\n", ls->name, msg,
              ls->from[0] ? "; set another HOST:PORT with " : "", ls->from);
      return -1;
    }
    H.nextra = i + 1;
  }
  if (H.settings.admin_listen[0]) {
    H.admin = rh_admin_start(rh_loop(), &H.settings, H.server, H.extra, msg, sizeof msg);
    if (!H.admin) {
      fprintf(stderr, "relayhost: --admin-listen: %s\n", msg);
      return -1;
    }
  }
  return 0;
}

/* Start-up failed after the generation went live: what was started closes on the loop. */
static int abandon_start(void) {
  if (H.server) rh_http_server_free(H.server);
  for (int i = 0; i < H.nextra; i++) rh_http_server_free(H.extra[i]);
  if (H.admin) rh_admin_free(H.admin);
  H.server = H.admin = NULL;
  H.nextra = 0;
  rh_gen_shutdown();
  rh_pool_close_all();
  uv_run(rh_loop(), UV_RUN_DEFAULT);
  return 1;
}

static int serve_generation(rh_gen *g) {
  rh_gen_activate(g, H.settings.drain_timeout);

  rh_http_limits lim;
  rh_http_limits_default(&lim);
  if (H.settings.max_head > 0) lim.max_head = (size_t)H.settings.max_head;
  if (H.settings.head_timeout > 0) lim.head_timeout = H.settings.head_timeout;
  if (H.settings.body_timeout > 0) lim.body_timeout = H.settings.body_timeout;
  if (H.settings.keepalive_timeout > 0) lim.keepalive_timeout = H.settings.keepalive_timeout;
  if (H.settings.send_timeout > 0) lim.send_timeout = H.settings.send_timeout;
  char msg[512];
  H.trusted = rh_cidr_parse(H.settings.trusted_proxies, msg, sizeof msg);
  if (!H.trusted) {
    fprintf(stderr, "relayhost: --trusted-proxies: %s\n", msg);
    return abandon_start();
  }
  lim.trusted_proxies = H.trusted;
  lim.tls = H.tls;
  if (start_listeners(&lim) < 0) return abandon_start();
  if (H.settings.pid_file[0] && rh_pid_file_write(H.settings.pid_file) < 0) {
    fprintf(stderr, "relayhost: --pid-file %s: %s\n", H.settings.pid_file, strerror(errno));
    return abandon_start();
  }
  uv_signal_init(rh_loop(), &H.sighup);
  uv_signal_start(&H.sighup, on_sighup, SIGHUP);
  uv_signal_init(rh_loop(), &H.sigterm);
  uv_signal_start(&H.sigterm, on_sigterm, SIGTERM);
  uv_signal_init(rh_loop(), &H.sigint);
  uv_signal_start(&H.sigint, on_sigterm, SIGINT);
  uv_signal_init(rh_loop(), &H.sigusr2);
  uv_signal_start(&H.sigusr2, on_sigusr2, SIGUSR2);
  uv_timer_init(rh_loop(), &H.shutdown_timer);
  uv_timer_init(rh_loop(), &H.upgrade_timer);
  uv_timer_init(rh_loop(), &H.reload_timer);
  if (H.worker >= 0) chan_start();
  signal(SIGPIPE, SIG_IGN);
  rh_watchdog_start(H.settings.watchdog);

  char bound[300];
  bound_address(H.settings.listen, H.server, bound, sizeof bound);
  rh_net_close_inherited();
  if (H.worker < 0) {
    announce_listeners();
    if (H.server) announce(bound);
    now_serving();
  }

  uv_run(rh_loop(), UV_RUN_DEFAULT);
  rh_watchdog_stop();
  if (H.settings.pid_file[0]) rh_pid_file_remove(H.settings.pid_file);
  RH_LOG(RH_LOG_INFO, "stopped", RH_INT("pid", getpid()));
  return 0;
}

static int check(void) {
  int status;
  rh_gen *g = load_first(&status);
  if (!g) return status;
  discard(g);
  printf("%s: ok\n", H.script);
  return 0;
}

/* The line people and tests look for: what was bound and where it serves. */
static void announce(const char *addr) {
  rh_banner b;
  char words[700];
  if (rh_banner_describe(addr, H.tls != NULL, &b) < 0) return;
  rh_banner_words(&b, words, sizeof words);
  RH_LOG(RH_LOG_INFO, "listening", RH_STR("listen", b.bound), RH_STR("url", b.url), RH_INT("port", b.port),
         RH_STR("script", H.script), RH_INT("pid", getpid()), RH_INT("workers", H.settings.workers),
         RH_STR("version", RELAYHOST_VERSION));
  printf("relayhost %s: %s %s (pid %d)\n", RELAYHOST_VERSION, H.script, words, (int)getpid());
  fflush(stdout);
}

/* addr with the port srv actually bound (an ephemeral :0 becomes the real one). */
static void bound_address(const char *addr, rh_http_server *srv, char *out, size_t len) {
  rh_hostport hp;
  if (!srv || rh_hostport_parse(addr, &hp)) snprintf(out, len, "%s", addr);
  else rh_hostport_format(hp.host, rh_http_server_port(srv), out, len);
}

/* A listener beside the main one (a script's own, or --admin-listen): announced before the main
 * one, so that whoever waits for the main one's line finds these already written. */
static void announce_other(const char *name, const char *label, const char *addr, rh_http_server *srv, int tls) {
  char at[300], words[700];
  rh_banner b;
  bound_address(addr, srv, at, sizeof at);
  if (rh_banner_describe(at, tls, &b) < 0) return;
  rh_banner_words(&b, words, sizeof words);
  RH_LOG(RH_LOG_INFO, "listener", RH_STR("name", name), RH_STR("listen", b.bound), RH_STR("url", b.url),
         RH_INT("port", b.port));
  printf("relayhost %s: %s %s\n", RELAYHOST_VERSION, label, words);
  fflush(stdout);
}

static void announce_listeners(void) {
  char label[64];
  for (int i = 0; i < H.nextra; i++) {
    snprintf(label, sizeof label, "listener '%s'", H.settings.listeners[i].name);
    announce_other(H.settings.listeners[i].name, label, H.settings.listeners[i].listen, H.extra[i], H.tls != NULL);
  }
  if (H.settings.admin_listen[0]) announce_other("admin", "--admin-listen", H.settings.admin_listen, H.admin, 0);
}

/* Tells whoever waits for us to serve: the process we replace (upgrade), and systemd (a
 * Type=notify unit; MAINPID lets it follow an upgrade to us). */
static void now_serving(void) {
  char state[64];
  rh_upgrade_ready();
  snprintf(state, sizeof state, "MAINPID=%d\nREADY=1", (int)getpid());
  rh_notify(state);
}

static void cleanup(void) {
  free(H.settings.help_text);
  free(H.script);
  rh_cidr_free(H.trusted);
  if (H.tls) rh_tls_ctx_free(H.tls);
  uv_loop_close(rh_loop());
  rh_dict_close_all();
  rh_metrics_free_all();
}

/* Serves (or checks) the script named by arg with the flags that follow. */
static int run_script(const char *arg, int is_check, int argc, char **argv) {
  H.script = rh_resolve_script(arg);
  if (!H.script) {
    fprintf(stderr, "relayhost: %s: no such script (a path, or a bundled name: " BUNDLED ")\n", arg);
    return 2;
  }
  H.argc = argc;
  H.argv = argv;
  int rc = is_check ? check() : serve();
  cleanup();
  return rc;
}

int main(int argc, char **argv) {
  /* Streamed bodies go through buffers of tens to hundreds of KiB, allocated and freed per
   * message; with glibc's defaults that memory went back to the kernel at once and was faulted
   * in again (page faults were a third of the git tunnel's profile, throughput rose 2.5x without
   * them). Up to 8 MiB of free heap is kept; blocks of 1 MiB and more are still mmap'd. */
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
    printf("relayhost %s\n", RELAYHOST_VERSION);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "reload") == 0) return rh_reload_command(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "upgrade") == 0) return rh_upgrade_command(argc - 2, argv + 2);
  rh_upgrade_init(argc, argv);
  /* A command line of flags only (or none) runs $RELAYHOST_SCRIPT: an image made for one
   * personality then takes the original product's command lines unchanged. */
  const char *implied = getenv("RELAYHOST_SCRIPT");
  if (implied && *implied && (argc < 2 || argv[1][0] == '-')) return run_script(implied, 0, argc - 1, argv + 1);
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  int is_check = strcmp(argv[1], "check") == 0;
  int first = is_check ? 2 : 1;
  if (first >= argc) {
    usage(stderr);
    return 2;
  }
  return run_script(argv[first], is_check, argc - first - 1, argv + first + 1);
}
