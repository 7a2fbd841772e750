-- scripts/workspace-relay.lua against real peers: node `ws` daemons and clients, and a node
-- validate endpoint on loopback (spec/js/ws-peers.js). Admission order and answers, claim checks,
-- routing to the owning client only, relay_status replies, 1009, SIGTERM -> 1001.
local helpers = require "helpers"
local cjson = require "cjson"
local W = require "workspace_support"

describe("workspace relay", function()
  local peers, host

  setup(function()
    peers = require("ws_peers").start()
    W.fixture(peers)
    host = W.start(peers, W.with_admin { RELAY_MAX_FRAME_BYTES = "4096" })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    peers:stop()
  end)

  describe("upgrade checks", function()
    it("answers 400 for a bad role, workspaceId or runtimeTargetId", function()
      assert.equal(400, W.connect(peers, host, "q1", "role=admin&workspaceId=ws1", "client-token-a"))
      assert.equal(400, W.connect(peers, host, "q2", "role=client&workspaceId=ws%2F1", "client-token-a"))
      assert.equal(400, W.connect(peers, host, "q3", "role=client", "client-token-a"))
      assert.equal(400, W.connect(peers, host, "q4", "role=client&workspaceId=" .. ("w"):rep(129), "client-token-a"))
      assert.equal(400, W.connect(peers, host, "q5", "role=client&workspaceId=ws1&runtimeTargetId=a%20b", "client-token-a"))
    end)

    it("answers 401 without a usable token, before asking the platform", function()
      peers:requests()
      assert.equal(401, W.connect(peers, host, "t1", W.CLIENT_Q, nil))
      assert.equal(401, W.connect(peers, host, "t2", W.CLIENT_Q, "short"))
      assert.equal(401, W.connect(peers, host, "t3", W.CLIENT_Q, ("x"):rep(4097)))
      assert.same({}, peers:requests())
      local _, n = host:log():gsub('"event":"upgrade_missing_auth"', "")
      assert.equal(3, n)
    end)

    it("asks the validate endpoint with the internal key and the request's fields", function()
      peers:requests()
      assert.equal("open", W.connect(peers, host, "v1", W.CLIENT_Q, "client-token-a"))
      local reqs = peers:requests()
      assert.equal(1, #reqs)
      assert.equal("/api/runtime/internal/relay/validate", reqs[1].path)
      assert.equal(W.KEY, reqs[1].key)
      assert.same({ relayToken = "client-token-a", role = "client", workspaceId = "ws1", runtimeTargetId = "rt1" },
                  cjson.decode(reqs[1].body))
      peers:cmd { op = "close", id = "v1", code = 1000, reason = "" }
      assert.equal(1000, peers:wait("v1", "close").code)
    end)

    it("takes the token from Sec-WebSocket-Protocol auth.<t>, and ?token= in dev mode", function()
      peers:open("p1", host:ws(W.CLIENT_Q), {}, { "auth.client-token-b" })
      assert.equal("open", peers:outcome("p1"))
      peers:open("p2", host:ws(W.CLIENT_Q .. "&token=client-token-c"), {})
      assert.equal("open", peers:outcome("p2"))
      peers:cmd { op = "close", id = "p1", code = 1000 }
      peers:cmd { op = "close", id = "p2", code = 1000 }
      peers:wait("p1", "close")
      peers:wait("p2", "close")
    end)

    it("answers 401 when the platform says no, times out, answers too much or not JSON, or the claims are not the schema's", function()
      for i, tok in ipairs { "unknown-token-zz", "not-ok-token", "slow-token-x", "huge-token-x", "garbage-token",
                             "bad-claims-token" } do
        assert.equal(401, W.connect(peers, host, "a" .. i, W.CLIENT_Q, tok), tok)
      end
      local log = host:log()
      assert.matches('"event":"admission_denied"[^\n]*REVOKED', log)
      assert.matches('"event":"admission_denied"[^\n]*timeout', log)
      assert.matches('"event":"admission_denied"[^\n]*over max_body', log)
      assert.matches('"event":"admission_denied"[^\n]*INVALID_JSON', log)
      assert.matches('"event":"admission_denied"[^\n]*bad claim surprise: unknown field', log)
      assert.is_nil(log:find("client%-token%-a")) -- tokens never reach the log
    end)

    it("answers 401 when the relay's internal key is wrong", function()
      local other = W.start(peers, { RELAY_INTERNAL_KEY = "a-different-key-0123456789" })
      assert.equal(401, W.connect(peers, other, "k1", W.CLIENT_Q, "client-token-a"))
      assert.matches('"event":"admission_denied"[^\n]*bad key', other:log())
      assert.equal(0, other:stop())
    end)

    it("refuses ?token= outside dev mode", function()
      local staging = W.start(peers, { RELAY_MODE = "staging" })
      peers:open("s1", staging:ws(W.CLIENT_Q .. "&token=client-token-a"), {})
      assert.equal(401, peers:outcome("s1"))
      assert.equal(0, staging:stop())
    end)
  end)

  describe("after the upgrade", function()
    it("accepts null for a claim the role may go without, and refuses it where the role needs the claim", function()
      assert.equal("open", W.connect(peers, host, "n1", "role=workspace-daemon&workspaceId=ws1&runtimeTargetId=rt9",
                                     "daemon-token-nulls"))
      assert.equal("open", W.connect(peers, host, "n2", "role=client&workspaceId=ws1&runtimeTargetId=rt9", "client-token-nulls"))
      peers:send("n2", W.kex_init("nulls"))
      assert.equal("nulls", peers:message("n1").requestId)
      assert.equal("open", W.connect(peers, host, "n3", "role=worker&workspaceId=ws1", "worker-token-nulls"))
      for _, id in ipairs { "n1", "n2", "n3" } do peers:cmd { op = "close", id = id, code = 1000 } end
      for _, id in ipairs { "n1", "n2", "n3" } do peers:wait(id, "close") end
      assert.equal(401, W.connect(peers, host, "n4", W.CLIENT_Q, "client-token-null-scope"))
      assert.equal(401, W.connect(peers, host, "n5", "role=worker&workspaceId=ws1", "worker-token-null-exec"))
      assert.equal(401, W.connect(peers, host, "n6", W.DAEMON_Q, "daemon-token-null-ws"))
      assert.equal(401, W.connect(peers, host, "n7", W.CLIENT_Q, "client-token-wrong-type"))
      local log = host:log()
      for _, why in ipairs { "null scope for a client", "null managedExecutorId for a worker", "null workspaceId for a workspace%-daemon",
                             "bad claim managedExecutorId" } do
        assert.matches('"event":"admission_denied"[^\n]*' .. why, log)
      end
    end)

    it("closes 4008 when the claims do not fit the connection", function()
      assert.equal("open", W.connect(peers, host, "c1", "role=client&workspaceId=ws2&runtimeTargetId=rt1", "client-token-a"))
      local c1 = peers:wait("c1", "close")
      assert.same({ 4008, "workspace claim mismatch" }, { c1.code, c1.reason })
      assert.equal("open", W.connect(peers, host, "c2", "role=client&workspaceId=ws1&runtimeTargetId=rt9", "client-token-a"))
      local c2 = peers:wait("c2", "close")
      assert.equal(4008, c2.code)
      assert.equal("runtime target claim mismatch", c2.reason)
      assert.equal("open", W.connect(peers, host, "c0", W.CLIENT_Q, "client-token-noworkspace"))
      local c0 = peers:wait("c0", "close")
      assert.same({ 4008, "missing workspace claim" }, { c0.code, c0.reason })
      assert.equal("open", W.connect(peers, host, "c3", W.CLIENT_Q, "client-token-noscope"))
      assert.equal("invalid scope claim", peers:wait("c3", "close").reason)
      assert.equal("open", W.connect(peers, host, "c4", "role=client&workspaceId=ws1", "client-token-notarget"))
      local status = peers:message("c4")
      assert.equal("relay_status", status.type)
      assert.equal("RUNTIME_TARGET_REQUIRED", status.code)
      assert.is_false(status.retryable)
      local c4 = peers:wait("c4", "close")
      assert.same({ 4008, "missing runtime target claim" }, { c4.code, c4.reason })
    end)

    it("refuses a daemon whose issue generation is older than the scope's last one", function()
      local RT3 = "role=workspace-daemon&workspaceId=ws1&runtimeTargetId=rt3"
      assert.equal("open", W.connect(peers, host, "g5", RT3, "daemon-token-rt3-gen5"))
      peers:cmd { op = "close", id = "g5", code = 1000 }
      peers:wait("g5", "close")
      helpers.wait_until(function()
        local st = cjson.decode(host:get("/state", W.bearer("admin-token-for-tests")).body)
        for _, w in ipairs(st.workspaces) do
          if w.runtimeTargetId == "rt3" then return not w.daemonConnected end
        end
      end, 3, "the first daemon gone")
      assert.equal("open", W.connect(peers, host, "g4", RT3, "daemon-token-rt3-gen4"))
      local c = peers:wait("g4", "close")
      assert.same({ 4008, "stale daemon generation" }, { c.code, c.reason })
      assert.equal("open", W.connect(peers, host, "g5b", RT3, "daemon-token-rt3-gen5"))
      assert.is_true(peers:quiet("g5b", "close", 0.3))
    end)

    it("says DAEMON_UNAVAILABLE to a client whose scope has no daemon, and INVALID_FRAME to a bad frame", function()
      assert.equal("open", W.connect(peers, host, "u1", "role=client&workspaceId=ws1&runtimeTargetId=rt2", "client-token-rt2"))
      peers:send("u1", W.e2ee("s-x"))
      local st = peers:message("u1")
      assert.same({ "relay_status", "DAEMON_UNAVAILABLE", true, "rt2", "ws1" },
                  { st.type, st.code, st.retryable, st.runtimeTargetId, st.workspaceId })
      for _, bad in ipairs { "not json", "[1,2]", cjson.encode { type = "e2ee", version = 1 } } do
        peers:send("u1", bad)
        local r = peers:message("u1")
        assert.equal("INVALID_FRAME", r.code)
        assert.equal("client frame must be a valid runtime or pairing control frame", r.message)
      end
      peers:send("u1", W.e2ee("s-x")) -- still open
      assert.equal("DAEMON_UNAVAILABLE", peers:message("u1").code)
      peers:cmd { op = "close", id = "u1", code = 1000 }
      peers:wait("u1", "close")
    end)

    it("routes client frames to the daemon verbatim and daemon frames to their owner only", function()
      assert.equal("open", W.connect(peers, host, "d", W.DAEMON_Q, "daemon-token-1"))
      assert.equal("open", W.connect(peers, host, "a", W.CLIENT_Q, "client-token-a"))
      assert.equal("open", W.connect(peers, host, "b", W.CLIENT_Q, "client-token-b"))
      -- a second daemon for the scope is refused
      assert.equal("open", W.connect(peers, host, "d2", W.DAEMON_Q, "daemon-token-2"))
      local d2 = peers:wait("d2", "close")
      assert.same({ 4008, "daemon already connected" }, { d2.code, d2.reason })

      local init_a = cjson.encode(W.kex_init("req-a"))
      peers:send("a", init_a)
      assert.equal(init_a, peers:wait("d", "message").text) -- byte for byte
      peers:send("b", W.kex_init("req-b"))
      assert.equal("req-b", peers:message("d").requestId)

      peers:send("d", W.kex_response("req-a", "sess-a"))
      assert.equal("sess-a", peers:message("a").sessionId)
      peers:send("d", W.kex_response("req-b", "sess-b"))
      assert.equal("sess-b", peers:message("b").sessionId)

      peers:send("d", W.e2ee("sess-a", 1, "for-a"))
      peers:send("d", W.e2ee("sess-b", 1, "for-b"))
      peers:send("d", W.e2ee("sess-nobody", 1, "for-nobody"))
      assert.equal("for-a", peers:message("a").ciphertext)
      assert.equal("for-b", peers:message("b").ciphertext)
      assert.is_true(peers:quiet("a", "message", 0.3))
      assert.is_true(peers:quiet("b", "message", 0.01))
      assert.equal(1, W.metric(host, "relay_frames_daemon_unroutable_total"))

      -- the E2EE frames went owner-only in C, the key exchange answers through the script
      assert.equal(2, W.metric(host, "relay_frames_daemon_to_clients_fast_total"))
      assert.equal(4, W.metric(host, "relay_frames_daemon_to_clients_total"))

      peers:send("a", W.e2ee("sess-a", 2, "up"))
      assert.equal("up", peers:message("d").ciphertext)

      -- a frame whose profile differs from the client's claim closes it
      assert.equal("open", W.connect(peers, host, "psk", W.CLIENT_Q, "client-token-psk"))
      peers:send("psk", W.e2ee("sess-psk", 1, "x", "noise-ik"))
      local psk = peers:wait("psk", "close")
      assert.same({ 4008, "e2ee profile mismatch" }, { psk.code, psk.reason })
    end)

    it("keeps pairing scope to pairing frames and routes the pairing answer to the requester", function()
      assert.equal("open", W.connect(peers, host, "pa", W.CLIENT_Q, "client-token-pairing"))
      peers:send("pa", W.pairing_offer("pair-1"))
      assert.equal("pair-1", peers:message("d").requestId)
      peers:send("d", W.pairing_response("pair-1"))
      assert.equal("relay_pairing_offer_response", peers:message("pa").type)
      assert.is_true(peers:quiet("a", "message", 0.2))
      peers:send("pa", W.e2ee("sess-a"))
      local c = peers:wait("pa", "close")
      assert.same({ 4008, "pairing scope only" }, { c.code, c.reason })
      peers:send("a", W.pairing_offer("pair-2"))
      local ca = peers:wait("a", "close")
      assert.same({ 4008, "runtime scope only" }, { ca.code, ca.reason })
    end)

    it("limits session-event subscriptions to the claimed channels and fans out presence without echo", function()
      assert.equal("open", W.connect(peers, host, "e1", W.CLIENT_Q, "client-token-events"))
      assert.equal("open", W.connect(peers, host, "e2", W.CLIENT_Q, "client-token-events2"))
      peers:send("e1", { type = "viewport.session_events.subscribe/v1", channel = "agent-session:s2" })
      local denied = peers:message("e1")
      assert.same({ "viewport.session_events.subscribe_denied/v1", "CHANNEL_NOT_AUTHORIZED" }, { denied.type, denied.reason })
      for _, id in ipairs { "e1", "e2" } do
        peers:send(id, { type = "viewport.session_events.subscribe/v1", channel = "agent-session:s1" })
        assert.equal("viewport.session_events.subscribe/v1", peers:message("d").type)
      end
      peers:send("d", { schema = "viewport.session_event_relay_frame/v1", channel = "agent-session:s1", event = { n = 1 } })
      assert.equal(1, peers:message("e1").event.n)
      assert.equal(1, peers:message("e2").event.n)
      assert.is_true(peers:quiet("b", "message", 0.2))
      peers:send("e1", { type = "viewport.session_viewer_presence/v1", channel = "agent-session:s1", action = "joined", userId = "u1" })
      assert.equal("joined", peers:message("e2").action)
      assert.is_true(peers:quiet("e1", "message", 0.2))
      peers:send("e1", W.e2ee("sess-e"))
      assert.equal("session-events scope only", peers:wait("e1", "close").reason)
    end)

    it("closes 1009 on a frame over RELAY_MAX_FRAME_BYTES and serves on", function()
      assert.equal("open", W.connect(peers, host, "big", W.CLIENT_Q, "client-token-c"))
      peers:cmd { op = "send", id = "big", bytes = 5000 }
      assert.equal(1009, peers:wait("big", "close").code)
      peers:send("b", W.e2ee("sess-b", 3, "after"))
      assert.equal("after", peers:message("d").ciphertext)
    end)

    it("serves /state, /logs and /metrics with the admin token only", function()
      assert.equal(401, host:get("/state").status)
      assert.equal(401, host:get("/state", { authorization = "Bearer wrong-token" }).status)
      assert.same({ ok = false, reason = "ADMIN_UNAUTHORIZED" }, cjson.decode(host:get("/logs").body))
      local st = cjson.decode(host:get("/state", { ["x-relay-admin-token"] = "admin-token-for-tests" }).body)
      local scope
      for _, w in ipairs(st.workspaces) do if w.runtimeTargetId == "rt1" then scope = w end end
      assert.is_true(scope.daemonConnected)
      assert.equal("ws1", scope.workspaceId)
      assert.is_true(scope.clientCount >= 2)
      assert.equal("single", st.backplaneMode)
      local logs = cjson.decode(host:get("/logs", W.bearer("admin-token-for-tests")).body).logs
      assert.is_true(#logs > 5)
      assert.is_table(logs[1].details)
      local summary = cjson.decode(host:get("/logs?summary=1", W.bearer("admin-token-for-tests")).body).logs
      assert.is_nil(summary[1].details)
      local m = host:get("/metrics", W.bearer("admin-token-for-tests"))
      assert.equal("text/plain; version=0.0.4; charset=utf-8", m.headers["content-type"])
      for _, name in ipairs { "relay_admission_ok_total", "relay_admission_denied_total", "relay_upgrade_invalid_query_total",
                              "relay_upgrade_missing_auth_total", "relay_frames_client_to_daemon_total",
                              "relay_frames_daemon_to_clients_total", "relay_ws_frame_too_large_total",
                              "relay_admin_unauthorized_total", "relay_frames_client_rejected_total" } do
        assert.matches("# TYPE " .. name .. " counter\n" .. name .. " %d+", m.body)
      end
      assert.matches("relay_connections_total %d+", m.body)
      assert.equal(3, W.metric(host, "relay_admin_unauthorized_total"))
      local h = cjson.decode(host:get("/health").body)
      assert.same({ true, "relay", "dev" }, { h.ok, h.service, h.relayMode })
      assert.same({ ok = false, reason = "NOT_FOUND" }, cjson.decode(host:get("/elsewhere").body))
    end)

    it("closes every connection 1001 on SIGTERM and exits 0", function()
      local h2 = W.start(peers)
      assert.equal("open", W.connect(peers, h2, "sd", W.DAEMON_Q, "daemon-token-1"))
      assert.equal("open", W.connect(peers, h2, "sc", W.CLIENT_Q, "client-token-a"))
      h2:signal("TERM")
      for _, id in ipairs { "sd", "sc" } do
        local c = peers:wait(id, "close")
        assert.same({ 1001, "relay shutting down" }, { c.code, c.reason })
      end
      assert.equal(0, h2:stop())
    end)
  end)

  it("turns worker transport requests into platform calls under the worker's own executor path only", function()
    local WQ = "role=worker&workspaceId=ws1&runtimeTargetId=rt1"
    local req = function(id, path) return { type = "viewport.worker_transport.request/v1", requestId = id, method = "GET", path = path } end
    assert.equal("open", W.connect(peers, host, "wk", WQ, "worker-token-1"))
    peers:requests()
    peers:send("wk", req("w1", "/api/runtime/workspaces/ws1/managed-executors/ex1/jobs?x=1"))
    local r = peers:message("wk", 5)
    assert.same({ "viewport.worker_transport.response/v1", "w1", 404 }, { r.type, r.requestId, r.status }) -- the platform's answer
    local calls = peers:requests()
    assert.same({ "/api/runtime/workspaces/ws1/managed-executors/ex1/jobs?x=1", W.KEY }, { calls[1].path, calls[1].key })
    peers:send("wk", req("w2", "/api/runtime/workspaces/ws1/managed-executors/ex2/jobs"))
    assert.equal(403, peers:message("wk").status)
    peers:send("wk", req("w3", "/api/runtime/workspaces/ws2/managed-executors/ex1"))
    assert.equal(403, peers:message("wk").status)
    peers:send("wk", req("w4", "/api/runtime/workspaces/ws1/managed-executors/ex10"))
    assert.equal(403, peers:message("wk").status)
    assert.same({}, peers:requests())
    peers:send("wk", { type = "viewport.worker_transport.request/v1", requestId = "w5", method = "DELETE", path = "/x" })
    assert.equal("INVALID_FRAME", peers:message("wk").code)
    -- a platform that cannot be reached: 502
    local dead = require("socket").bind("127.0.0.1", 0)
    local _, dead_port = dead:getsockname()
    dead:close()
    local down = W.start(peers, { SERVER_URL = "http://127.0.0.1:" .. dead_port,
                                  RELAY_VALIDATE_URL = ("http://127.0.0.1:%d/api/runtime/internal/relay/validate"):format(peers.http_port) })
    assert.equal("open", W.connect(peers, down, "wk2", WQ, "worker-token-1"))
    peers:send("wk2", req("w6", "/api/runtime/workspaces/ws1/managed-executors/ex1/jobs"))
    assert.equal(502, peers:message("wk2", 5).status)
    assert.equal(0, down:stop())
  end)

  it("gives /state's clientIds as an array, also when a scope has no client (issue 20: it was {})", function()
    local h = W.start(peers, W.with_admin())
    local function state() return h:get("/state", W.bearer("admin-token-for-tests")).body end
    assert.truthy(state():find('"workspaces":[]', 1, true))
    assert.equal("open", W.connect(peers, h, "e_d", W.DAEMON_Q, "daemon-token-1"))
    helpers.wait_until(function() return state():find('"daemonConnected":true', 1, true) end, 3, "the daemon in /state")
    assert.truthy(state():find('"clientIds":[]', 1, true), state())
    assert.equal("open", W.connect(peers, h, "e_c", W.CLIENT_Q, "client-token-a"))
    helpers.wait_until(function() return state():find('"clientIds":["client-a"]', 1, true) end, 3, "the client in /state")
    assert.equal(0, h:stop())
  end)

  it("without RELAY_ENABLE_ADMIN_HTTP answers 404 on the admin routes, /health still 200", function()
    local h3 = W.start(peers, { RELAY_ADMIN_TOKEN = "admin-token-for-tests", RELAY_MODE = "staging" })
    for _, p in ipairs { "/state", "/logs", "/metrics" } do
      local res = h3:get(p, W.bearer("admin-token-for-tests"))
      assert.equal(404, res.status)
      assert.same({ ok = false, reason = "ADMIN_ENDPOINTS_DISABLED" }, cjson.decode(res.body))
    end
    local h = cjson.decode(h3:get("/health").body)
    assert.is_nil(h.relayId) -- not verbose outside dev mode
    assert.equal(0, h3:stop())
  end)
end)
