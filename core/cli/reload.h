/* reload: the pid file, and the status file beside it through which `relayhost reload`
 * learns the outcome of the reload it asked for (nginx's -s reload cannot tell). */
#ifndef RH_RELOAD_H
#define RH_RELOAD_H

#include <stddef.h>

int rh_pid_file_write(const char *path);   /* 0, or -1 with errno */
void rh_pid_file_remove(const char *path); /* only while it still names this process */
int rh_pid_file_read(const char *path);    /* the pid in it, or -1 */
/* Records reload number seq: ok (err NULL) or failed with err's first line. */
void rh_reload_status_write(const char *pid_file, unsigned seq, const char *err);
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
 * before the signal is `before`): -1 not yet, else the command's exit status, its message
 * printed. 2 on usage, no host, or no outcome within --timeout. */
typedef int (*rh_outcome_fn)(const char *pid_file, int pid, long before);
int rh_signal_host(const char *cmd, int argc, char **argv, int sig, rh_outcome_fn outcome);

#endif
