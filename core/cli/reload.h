/* reload: the pid file, and the status file beside it through which `relayhost reload`
 * learns the outcome of the reload it asked for (nginx's -s reload cannot tell). */
#ifndef RH_RELOAD_H
#define RH_RELOAD_H

#include <stddef.h>

int rh_pid_file_write(const char *path);   /* 0, or -1 with errno */
void rh_pid_file_remove(const char *path); /* only while it still names this process */
int rh_pid_file_read(const char *path);    /* the pid in it, or -1 */
/* Before a start takes the pid file over: -1 and why in msg when it names another live relayhost
 * (not predecessor, the process a binary upgrade replaces; 0 when none). A pid file whose
 * process is gone is stale and taken over. */
int rh_pid_file_check(const char *path, int predecessor, char *msg, size_t n);
/* Records the next outcome in F.reload: ok (err NULL) or failed with err's first line. */
void rh_reload_status_write(const char *pid_file, const char *err);
/* `relayhost reload --pid-file F [--timeout S]`: exit status 0 on success, 1 on a failed
 * reload (its message printed), 2 on usage or a host that is not running. */
int rh_reload_command(int argc, char **argv);

/* The reload status file's last line: its sequence number (-1 when there is none), and "ok" or
 * "failed MESSAGE" in msg. Upgrades report their failures here too. */
long rh_reload_status_read(const char *pid_file, char *msg, size_t n);
/* Parses `--pid-file F [--timeout S]` (F defaults to $RELAY_PID_FILE) for the commands that
 * signal a running host; prints what is wrong and returns -1. */
int rh_pid_command_args(const char *cmd, int argc, char **argv, const char **pid_file, double *timeout);

/* The commands that signal a running host (`reload`, `upgrade`): parse their flags, send sig to
 * the pid in the pid file, then ask outcome every 20 ms (the status file's sequence number
 * before the signal is `before`; for SIGHUP, id names the request left for the host, or is NULL): -1 not yet, else the command's exit status, its message
 * printed. 2 on usage, no host, or no outcome within --timeout. */
typedef int (*rh_outcome_fn)(const char *pid_file, int pid, const char *id, long before);
int rh_signal_host(const char *cmd, int argc, char **argv, int sig, rh_outcome_fn outcome);

/* Reload requests. `relayhost reload` leaves F.reload-req.ID beside the pid file F before its
 * SIGHUP, and the host answers in F.reload-out.ID: so each command gets the outcome of a reload
 * that started after its request, never another's (signals coalesce, reloads overlap). */
#define RH_RELOAD_ID_MAX 48
#define RH_RELOAD_MAX_IDS 32
typedef struct {
  int n;
  char id[RH_RELOAD_MAX_IDS][RH_RELOAD_ID_MAX];
} rh_reload_ids;
/* At the start of a reload: the requests waiting now (removed from disk). 1 when more wait than
 * fit: those belong to another reload. */
int rh_reload_take(const char *pid_file, rh_reload_ids *ids);
/* The outcome of reload seq (ok when err is NULL) for every id, and in the status file. */
void rh_reload_answer(const char *pid_file, const rh_reload_ids *ids, unsigned seq, const char *err);

/* Why a reload whose script changed between its check and its load replaced nothing. */
#define RH_RELOAD_CHANGED "the script changed while this reload checked and loaded it; nothing was replaced (reload again)"

/* SHA-256 of a file's content, in hex: what a reload checked, compared with what it loads. */
int rh_file_hash(const char *path, char out[65]);

#endif
