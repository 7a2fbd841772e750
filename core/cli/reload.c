#include "cli/reload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void outcome_write(const char *path, unsigned seq, const char *err);

static void status_path(const char *pid_file, char *out, size_t n) {
  snprintf(out, n, "%s.reload", pid_file);
}

int rh_pid_file_write(const char *path) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", (int)getpid());
  if (fclose(f) != 0 || rename(tmp, path) != 0) return -1;
  char st[1100];
  status_path(path, st, sizeof st);
  if (access(st, F_OK) != 0) outcome_write(st, 0, NULL);
  return 0;
}

int rh_pid_file_read(const char *path) {
  FILE *f = fopen(path, "r");
  int pid = 0;
  if (f && fscanf(f, "%d", &pid) != 1) pid = 0;
  if (f) fclose(f);
  return pid > 0 ? pid : -1;
}

/* A pid whose /proc stat still reads as a live process called like us. A zombie is gone; a
 * pid taken since by another program is not ours to refuse over. */
static int running_like_us(int pid) {
  char path[64], mine[64] = "", theirs[64] = "", state = 0;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return errno != ENOENT; /* cannot tell: assume it is */
  int got = fscanf(f, "%*d (%63[^)]) %c", theirs, &state);
  fclose(f);
  if (got != 2 || state == 'Z' || state == 'X') return 0;
  f = fopen("/proc/self/comm", "r");
  if (f && !fgets(mine, sizeof mine, f)) mine[0] = 0;
  if (f) fclose(f);
  mine[strcspn(mine, "\n")] = 0;
  return strcmp(mine, theirs) == 0;
}

int rh_pid_file_check(const char *path, int predecessor, char *msg, size_t n) {
  int pid = rh_pid_file_read(path);
  if (pid <= 0 || pid == (int)getpid() || pid == predecessor) return 0;
  if ((kill(pid, 0) < 0 && errno == ESRCH) || !running_like_us(pid)) return 0; /* stale: replaced */
  snprintf(msg, n, "pid %d is running: stop that relayhost first, or remove the file if pid %d is not one", pid, pid);
  return -1;
}

void rh_pid_file_remove(const char *path) {
  /* After a binary upgrade the file names our successor: it is theirs to remove. */
  if (rh_pid_file_read(path) != (int)getpid()) return;
  rh_reload_ids left; /* reloads asked for while we stopped: answered, not left to time out */
  int more;
  do {
    more = rh_reload_take(path, &left);
    rh_reload_answer(path, &left, 0, "the host stopped before this reload ran; nothing was replaced");
  } while (more);
  char st[1100];
  status_path(path, st, sizeof st);
  unlink(path);
  unlink(st);
}

/* One outcome line, "SEQ ok" or "SEQ failed MESSAGE", written whole (tmp + rename). */
static void outcome_write(const char *path, unsigned seq, const char *err) {
  char tmp[1200];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  if (err) {
    const char *nl = strchr(err, '\n');
    fprintf(f, "%u failed %.*s\n", seq, nl ? (int)(nl - err) : (int)strlen(err), err);
  } else {
    fprintf(f, "%u ok\n", seq);
  }
  fclose(f);
  rename(tmp, path); /* atomic: the reader never sees half a line */
}

static long outcome_read(const char *path, char *msg, size_t n) {
  char line[2048];
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char *got = fgets(line, sizeof line, f);
  fclose(f);
  if (!got) return -1;
  line[strcspn(line, "\n")] = 0;
  char *sp = strchr(line, ' ');
  if (!sp) return -1;
  snprintf(msg, n, "%s", sp + 1);
  return strtol(line, NULL, 10);
}

void rh_reload_status_write(const char *pid_file, const char *err) {
  if (!pid_file || !pid_file[0]) return;
  char path[1100], msg[2048];
  status_path(pid_file, path, sizeof path);
  /* one count for every process that writes here (an upgrade's old and new process), so that a
   * command waiting for a number above the one it saw is never answered by an older line */
  long seq = outcome_read(path, msg, sizeof msg);
  outcome_write(path, (unsigned)(seq < 0 ? 1 : seq + 1), err);
}

long rh_reload_status_read(const char *pid_file, char *msg, size_t n) {
  char path[1100];
  status_path(pid_file, path, sizeof path);
  return outcome_read(path, msg, n);
}

/* ---- reload requests: F.reload-req.ID, answered in F.reload-out.ID ---- */

static void id_path(const char *pid_file, const char *kind, const char *id, char *out, size_t n) {
  snprintf(out, n, "%s.reload-%s.%s", pid_file, kind, id);
}

static int id_ok(const char *id) {
  size_t n = strlen(id);
  return n > 0 && n < RH_RELOAD_ID_MAX && strspn(id, "0123456789-") == n;
}

int rh_reload_take(const char *pid_file, rh_reload_ids *ids) {
  ids->n = 0;
  if (!pid_file || !pid_file[0]) return 0;
  char dir[1100], prefix[1100];
  const char *slash = strrchr(pid_file, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == pid_file) snprintf(dir, sizeof dir, "/");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - pid_file), pid_file);
  snprintf(prefix, sizeof prefix, "%s.reload-req.", slash ? slash + 1 : pid_file);
  size_t plen = strlen(prefix);
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  int more = 0;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, prefix, plen) != 0 || !id_ok(e->d_name + plen)) continue;
    if (ids->n == RH_RELOAD_MAX_IDS) { more = 1; break; } /* the rest: the next reload's */
    snprintf(ids->id[ids->n], RH_RELOAD_ID_MAX, "%s", e->d_name + plen);
    char req[1200];
    id_path(pid_file, "req", ids->id[ids->n++], req, sizeof req);
    unlink(req);
  }
  closedir(d);
  return more;
}

void rh_reload_answer(const char *pid_file, const rh_reload_ids *ids, unsigned seq, const char *err) {
  rh_reload_status_write(pid_file, err);
  for (int i = 0; ids && i < ids->n; i++) {
    char out[1200];
    id_path(pid_file, "out", ids->id[i], out, sizeof out);
    outcome_write(out, seq, err);
  }
}

/* ---- the script's content, so that what was checked is what is loaded ---- */

int rh_file_hash(const char *path, char out[65]) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  unsigned char buf[16384], md[32];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(c, buf, n);
  int bad = ferror(f);
  fclose(f);
  EVP_DigestFinal_ex(c, md, NULL);
  EVP_MD_CTX_free(c);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
  return bad ? -1 : 0;
}

int rh_pid_command_args(const char *cmd, int argc, char **argv, const char **pid_file, double *timeout) {
  *pid_file = getenv("RELAY_PID_FILE");
  *timeout = 60;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    while (*a == '-') a++;
    const char *eq = strchr(a, '=');
    size_t klen = eq ? (size_t)(eq - a) : strlen(a);
    const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!val) break;
    if (klen == 8 && strncmp(a, "pid-file", 8) == 0) *pid_file = val;
    else if (klen == 7 && strncmp(a, "timeout", 7) == 0) *timeout = atof(val);
    else {
      fprintf(stderr, "relayhost %s: unknown flag %s (want --pid-file F [--timeout S])\n", cmd, argv[i - (eq ? 0 : 1)]);
      return -1;
    }
  }
  if (!*pid_file || !**pid_file) {
    fprintf(stderr, "relayhost %s: --pid-file F is required (the file the host was started with)\n", cmd);
    return -1;
  }
  return 0;
}

/* The request a reload command leaves beside the pid file before its SIGHUP. */
static void make_request(const char *pid_file, char *id, size_t n, char *req, size_t rn) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(id, n, "%d-%lld%09ld", (int)getpid(), (long long)ts.tv_sec, ts.tv_nsec);
  id_path(pid_file, "req", id, req, rn);
  int fd = open(req, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
  else req[0] = 0;
}

int rh_signal_host(const char *cmd, int argc, char **argv, int sig, rh_outcome_fn outcome) {
  const char *pid_file;
  double timeout;
  if (rh_pid_command_args(cmd, argc, argv, &pid_file, &timeout) < 0) return 2;
  int pid = rh_pid_file_read(pid_file);
  if (pid < 0) {
    fprintf(stderr, "relayhost %s: %s: no pid in it (is the host running?)\n", cmd, pid_file);
    return 2;
  }
  char msg[2048], id[RH_RELOAD_ID_MAX] = "", req[1200] = "";
  long before = rh_reload_status_read(pid_file, msg, sizeof msg);
  if (sig == SIGHUP) make_request(pid_file, id, sizeof id, req, sizeof req);
  if (kill(pid, sig) < 0) {
    fprintf(stderr, "relayhost %s: pid %d: %s\n", cmd, pid, strerror(errno));
    if (req[0]) unlink(req);
    return 2;
  }
  struct timespec step = { 0, 20 * 1000 * 1000 };
  for (double waited = 0; waited < timeout; waited += 0.02) {
    int rc = outcome(pid_file, pid, req[0] ? id : NULL, before);
    if (rc >= 0) return rc;
    if (kill(pid, 0) < 0 && errno == ESRCH && (rc = outcome(pid_file, pid, req[0] ? id : NULL, before)) < 0) {
      if (req[0]) unlink(req);
      fprintf(stderr, "relayhost %s: pid %d exited without an answer\n", cmd, pid);
      return 2;
    }
    if (rc >= 0) return rc;
    nanosleep(&step, NULL);
  }
  if (req[0]) unlink(req);
  fprintf(stderr, "relayhost %s: pid %d gave no outcome within %.0f s\n", cmd, pid, timeout);
  return 2;
}

static int report(int pid, const char *msg) {
  if (strcmp(msg, "ok") == 0) {
    printf("relayhost reload: pid %d reloaded\n", pid);
    return 0;
  }
  fprintf(stderr, "%s\n", strncmp(msg, "failed ", 7) == 0 ? msg + 7 : msg);
  return 1;
}

/* A reload's outcome: the answer to our request; without one (the request file could not be
 * made), the status file's next line. */
static int reloaded(const char *pid_file, int pid, const char *id, long before) {
  char msg[2048], out[1200];
  if (!id) return rh_reload_status_read(pid_file, msg, sizeof msg) > before ? report(pid, msg) : -1;
  id_path(pid_file, "out", id, out, sizeof out);
  if (outcome_read(out, msg, sizeof msg) < 0) return -1;
  unlink(out);
  return report(pid, msg);
}

int rh_reload_command(int argc, char **argv) { return rh_signal_host("reload", argc, argv, SIGHUP, reloaded); }
