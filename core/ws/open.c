/* open: the open-WebSockets gauge. See open.h. */
#include "ws/open.h"

#include <stddef.h>

#include "metrics/metrics.h"

static rh_metric *m_open;

void rh_ws_open_register(void) {
  static const char *const sides[] = { "server", "client", "proxy" };
  if (m_open) return;
  const char *err;
  m_open = rh_metric_register(RH_GAUGE, "relayhost_websockets_open",
                              "WebSocket sessions open, by side (server: accepted by a script, client: "
                              "dialled by one, proxy: passed through a mount)",
                              (const char *[]){ "side" }, 1, NULL, 0, &err);
  for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++) rh_metric_add(m_open, &sides[i], 0);
}

void rh_ws_open_add(const char *side, int delta) {
  rh_ws_open_register();
  rh_metric_add(m_open, (const char *[]){ side }, delta);
}
