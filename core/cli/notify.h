/* notify: systemd's readiness protocol (sd_notify), without libsystemd: one datagram to
 * $NOTIFY_SOCKET. Lets a Type=notify unit know when we serve, reload and stop, and follow a
 * binary upgrade to the new main pid. */
#ifndef RH_NOTIFY_H
#define RH_NOTIFY_H

/* Sends state ("READY=1", "MAINPID=123\nREADY=1", ...). 0 sent or nothing to send to, -1 error. */
int rh_notify(const char *state);

#endif
