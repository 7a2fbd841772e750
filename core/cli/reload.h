/* reload: the pid file, and the status file beside it through which `relayhost reload`
 * learns the outcome of the reload it asked for (nginx's -s reload cannot tell). */
#ifndef RH_RELOAD_H
#define RH_RELOAD_H

int rh_pid_file_write(const char *path);   /* 0, or -1 with errno */
void rh_pid_file_remove(const char *path);
/* Records reload number seq: ok (err NULL) or failed with err's first line. */
void rh_reload_status_write(const char *pid_file, unsigned seq, const char *err);
/* `relayhost reload --pid-file F [--timeout S]`: exit status 0 on success, 1 on a failed
 * reload (its message printed), 2 on usage or a host that is not running. */
int rh_reload_command(int argc, char **argv);

#endif
