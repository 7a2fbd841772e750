/* hub: the workspace relay's hot path in C. It knows, per scope (workspaceId[:runtimeTargetId]),
 * which client connection owns which E2EE session, and takes a daemon's frames before the script
 * does: an E2EE envelope or key-update for a session with a local owner goes straight to that
 * owner, counted and rate limited here, without running Lua. Everything else (key exchanges,
 * pairing, session events, unknown owners, remote owners, a full consumer, a limit reached, a
 * profile downgrade) is left to the script, which also tells the hub about owners as key
 * exchanges complete. Connections are opaque: the caller's ops send to them. */
#ifndef RH_HUB_H
#define RH_HUB_H

#include <stddef.h>
#include <stdint.h>

typedef struct rh_hub rh_hub;
typedef struct rh_hub_peer rh_hub_peer;

typedef struct {
  int (*send)(void *conn, const char *p, size_t n); /* a text message: 0, or -1 if it cannot go */
  size_t (*queued)(void *conn);                     /* bytes sent but not yet taken by the peer */
} rh_hub_ops;

/* daemon_per_minute: the token bucket of daemon frames per scope; max_pending: a consumer with
 * more queued is left to the script (which cuts it off). ops is copied. */
rh_hub *rh_hub_new(const rh_hub_ops *ops, double daemon_per_minute, size_t max_pending);
void rh_hub_free(rh_hub *h);

/* A client connection. The hub holds the record until rh_hub_peer_gone and the last session it
 * owns is dropped; after rh_hub_peer_gone nothing is sent to conn. */
rh_hub_peer *rh_hub_peer_new(rh_hub *h, void *conn);
void rh_hub_peer_gone(rh_hub *h, rh_hub_peer *peer);

/* The owner of session in scope (peer NULL: none, e.g. a client on another relay). */
void rh_hub_own(rh_hub *h, const char *scope, const char *session, rh_hub_peer *peer);
/* Forgets scope: its owners and its daemon bucket (a new daemon, or the scope evicted). */
void rh_hub_clear_scope(rh_hub *h, const char *scope);

/* Takes one token from scope's daemon bucket: 1 allowed, 0 over the limit. now in seconds. */
int rh_hub_daemon_allow(rh_hub *h, const char *scope, double now);

/* A daemon's text frame: 1 if the hub delivered it (an E2EE envelope or key-update whose
 * session has a local owner), 0 if the script must handle it. claimed_profile: the daemon's
 * e2eeProfile claim or NULL. */
int rh_hub_daemon_frame(rh_hub *h, const char *scope, const char *claimed_profile, const char *p, size_t n,
                        double now);

void rh_hub_stats(const rh_hub *h, uint64_t *frames, uint64_t *bytes);

#endif
