-- Frame shapes of the Viewport relay protocol (services/relay relay-frame-validation.ts), as
-- relay.schema shapes. The relay never decrypts: it recognises envelopes and control frames by
-- their plain fields and routes on them. client(text) / daemon(text) -> the frame and what kind of
-- frame it is (nil: not a frame the relay takes).
local cjson = require "cjson"
local S = require "relay.schema"

local M = {}

local decode = cjson.decode

-- A JSON object, or nil (arrays, scalars and bad JSON are not frames).
function M.parse(text)
  local ok, v = pcall(decode, text)
  if not ok or type(v) ~= "table" or v[1] ~= nil then return nil end
  return v
end

local str, opt = S.string(), S.optional
local nonempty = S.string { pattern = "%S", what = "a string that is not blank" }
local profile = S.enum { "noise-ik", "noise-ikpsk2" }
local channel = S.string { pattern = "^agent%-session:", what = 'an "agent-session:" channel' }
local epoch = S.integer { min = 1 }

local obj = S.object

local E2EE = obj { version = S.const(2), profile = profile, sessionId = nonempty, epoch = epoch,
                   seq = S.integer { min = 1 }, iv = nonempty, tag = nonempty, ciphertext = nonempty }

-- The PSK profile names the pairing peer.
local function psk_peer(f)
  local peer = f.pairingPeerId
  return f.profile ~= "noise-ikpsk2" or (type(peer) == "string" and peer:find("%S") ~= nil), "a pairingPeerId with noise-ikpsk2"
end

local KEX_INIT = S.variant("version", {
  [2] = obj { profile = profile, requestId = str, clientPublicKey = str, clientNonce = str, clientProof = str },
  [3] = obj { profile = profile, requestId = str, clientEphemeralPublicKey = str, encryptedClientStatic = str },
}, { check = psk_peer })

local SESSION = obj { channel = channel }

local CLIENT = {
  e2ee = { "e2ee", E2EE },
  relay_key_exchange_init = { "kex_init", KEX_INIT },
  relay_pairing_offer_request = { "pairing", obj {
    requestId = nonempty, clientChannelPublicKey = nonempty, ttlSeconds = opt(S.integer { min = 30, max = 3600 }) } },
  relay_pairing_redeem_request = { "pairing", obj {
    requestId = nonempty, offerId = nonempty, encIv = nonempty, encTag = nonempty, encCiphertext = nonempty } },
  ["viewport.session_events.subscribe/v1"] = { "subscribe", obj { channel = channel, afterSequence = opt(S.integer { min = 0 }) } },
  ["viewport.session_events.unsubscribe/v1"] = { "unsubscribe", SESSION },
  ["viewport.session_viewer_presence/v1"] = { "presence", obj {
    channel = channel, action = S.enum { "joined", "left", "heartbeat" }, userId = S.string { max = 128, pattern = "%S" },
    displayName = opt(S.string { max = 255 }), sentAt = opt(str) } },
}

-- by: type -> { kind, shape }
local function kind(by, f)
  local t = by[f.type]
  return t and S.check(t[2], f) and t[1] or nil
end

-- Client -> daemon: "e2ee", "kex_init", "pairing", "subscribe", "unsubscribe", "presence".
function M.client(text)
  local f = M.parse(text)
  return f, f and kind(CLIENT, f)
end

local REFUSED = obj { requestId = nonempty, errorCode = nonempty }
local function ok_or_error(fields) return S.variant("ok", { [true] = obj(fields), [false] = REFUSED }) end

local DAEMON = {
  e2ee = { "e2ee", E2EE },
  relay_key_update_required = { "key_update", obj { sessionId = str, nextEpoch = S.number() } },
  relay_key_exchange_response = { "kex_response", S.variant("version", {
    [2] = obj { profile = profile, requestId = str, sessionId = str, proof = str, daemonNonce = str, epoch = S.number() },
    [3] = obj { profile = profile, requestId = str, sessionId = str, proof = str, daemonPublicKey = str,
                daemonEphemeralPublicKey = str, encryptedMetadata = str, epoch = epoch },
  }) },
  relay_pairing_offer_response = { "pairing_response", ok_or_error {
    requestId = nonempty, daemonChannelPublicKey = nonempty, encIv = nonempty, encTag = nonempty, encCiphertext = nonempty } },
  relay_pairing_redeem_response = { "pairing_response", ok_or_error { requestId = nonempty } },
}

local SESSION_EVENT = obj { channel = channel, event = obj {} }
local SESSION_EVENT_SCHEMA = "viewport.session_event_relay_frame/v1"

-- Daemon -> clients: "e2ee", "key_update", "kex_response", "pairing_response", "session_event".
function M.daemon(text)
  local f = M.parse(text)
  local k = f and kind(DAEMON, f)
  if f and not k and f.schema == SESSION_EVENT_SCHEMA and S.check(SESSION_EVENT, f) then
    k = "session_event"
  end
  return f, k
end

-- viewport.worker_transport.request/v1: a worker's HTTP call, only under the platform's
-- runtime workspaces API.
local WORKER_REQUEST = obj {
  type = S.const("viewport.worker_transport.request/v1"), requestId = nonempty, method = S.enum { "GET", "POST", "PATCH" },
  path = S.string { pattern = "^/api/runtime/workspaces/", what = "a path under /api/runtime/workspaces/" },
  headers = opt(obj {}), body = opt(str),
}
function M.worker_request(f) return S.check(WORKER_REQUEST, f) end

-- noise-ikpsk2 is the stronger profile (it adds the pairing PSK).
local strength = { ["noise-ik"] = 1, ["noise-ikpsk2"] = 2 }
function M.weaker(frame_profile, claimed)
  return frame_profile ~= nil and claimed ~= nil and (strength[frame_profile] or 0) < (strength[claimed] or 0)
end

return M
