#include "cli/reload.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
  rh_reload_status_write(path, 0, NULL);
  return 0;
}

int rh_pid_file_read(const char *path) {
  FILE *f = fopen(path, "r");
  int pid = 0;
  if (f && fscanf(f, "%d", &pid) != 1) pid = 0;
  if (f) fclose(f);
  return pid > 0 ? pid : -1;
}

void rh_pid_file_remove(const char *path) {
  /* After a binary upgrade the file names our successor: it is theirs to remove. */
  if (rh_pid_file_read(path) != (int)getpid()) return;
  char st[1100];
  status_path(path, st, sizeof st);
  unlink(path);
  unlink(st);
}

void rh_reload_status_write(const char *pid_file, unsigned seq, const char *err) {
  if (!pid_file || !pid_file[0]) return;
  char path[1100], tmp[1110];
  status_path(pid_file, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
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

long rh_reload_status_read(const char *pid_file, char *msg, size_t n) {
  char path[1100], line[2048];
  status_path(pid_file, path, sizeof path);
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

int rh_signal_host(const char *cmd, int argc, char **argv, int sig, rh_outcome_fn outcome) {
  const char *pid_file;
  double timeout;
  if (rh_pid_command_args(cmd, argc, argv, &pid_file, &timeout) < 0) return 2;
  int pid = rh_pid_file_read(pid_file);
  if (pid < 0) {
    fprintf(stderr, "relayhost %s: %s: no pid in it (is the host running?)\n", cmd, pid_file);
    return 2;
  }
  char msg[2048];
  long before = rh_reload_status_read(pid_file, msg, sizeof msg);
  if (kill(pid, sig) < 0) {
    fprintf(stderr, "relayhost %s: pid %d: %s\n", cmd, pid, strerror(errno));
    return 2;
  }
  struct timespec step = { 0, 20 * 1000 * 1000 };
  for (double waited = 0; waited < timeout; waited += 0.02) {
    int rc = outcome(pid_file, pid, before);
    if (rc >= 0) return rc;
    nanosleep(&step, NULL);
  }
  fprintf(stderr, "relayhost %s: pid %d gave no outcome within %.0f s\n", cmd, pid, timeout);
  return 2;
}

/* A reload's outcome: the status file's next line. */
static int reloaded(const char *pid_file, int pid, long before) {
  char msg[2048];
  if (rh_reload_status_read(pid_file, msg, sizeof msg) <= before) return -1;
  if (strcmp(msg, "ok") == 0) {
    printf("relayhost reload: pid %d reloaded\n", pid);
    return 0;
  }
  fprintf(stderr, "%s\n", strncmp(msg, "failed ", 7) == 0 ? msg + 7 : msg);
  return 1;
}

int rh_reload_command(int argc, char **argv) { return rh_signal_host("reload", argc, argv, SIGHUP, reloaded); }
