-- Frame shapes of the Viewport relay protocol (services/relay relay-frame-validation.ts). The
-- relay never decrypts: it recognises envelopes and control frames by their plain fields and
-- routes on them. kind(frame) names what a frame is, or returns nil.
local cjson = require "cjson"

local M = {}

local decode = cjson.decode

-- A JSON object, or nil (arrays, scalars and bad JSON are not frames).
function M.parse(text)
  local ok, v = pcall(decode, text)
  if not ok or type(v) ~= "table" or v[1] ~= nil then return nil end
  return v
end

local function str(v) return type(v) == "string" end
local function nonempty(v) return type(v) == "string" and v:find("%S") ~= nil end
local function int_min(v, min) return type(v) == "number" and v == math.floor(v) and v >= min end
local function profile(v) return v == "noise-ik" or v == "noise-ikpsk2" end
local function channel(v) return nonempty(v) and v:sub(1, 14) == "agent-session:" end

local function e2ee(f)
  return f.type == "e2ee" and f.version == 2 and profile(f.profile) and nonempty(f.sessionId)
    and int_min(f.epoch, 1) and int_min(f.seq, 1) and nonempty(f.iv) and nonempty(f.tag) and nonempty(f.ciphertext)
end

local function psk_peer_ok(f) return f.profile ~= "noise-ikpsk2" or nonempty(f.pairingPeerId) end

local function kex_init(f)
  if f.type ~= "relay_key_exchange_init" or not profile(f.profile) or not str(f.requestId) then return false end
  if f.version == 3 then
    return str(f.clientEphemeralPublicKey) and str(f.encryptedClientStatic) and psk_peer_ok(f)
  end
  return f.version == 2 and str(f.clientPublicKey) and str(f.clientNonce) and str(f.clientProof) and psk_peer_ok(f)
end

local function pairing_request(f)
  if f.type == "relay_pairing_offer_request" then
    return nonempty(f.requestId) and nonempty(f.clientChannelPublicKey)
      and (f.ttlSeconds == nil or (int_min(f.ttlSeconds, 30) and f.ttlSeconds <= 3600))
  end
  return f.type == "relay_pairing_redeem_request" and nonempty(f.requestId) and nonempty(f.offerId)
    and nonempty(f.encIv) and nonempty(f.encTag) and nonempty(f.encCiphertext)
end

local function subscribe(f)
  return f.type == "viewport.session_events.subscribe/v1" and channel(f.channel)
    and (f.afterSequence == nil or int_min(f.afterSequence, 0))
end

local function unsubscribe(f) return f.type == "viewport.session_events.unsubscribe/v1" and channel(f.channel) end

local function viewer_presence(f)
  return f.type == "viewport.session_viewer_presence/v1" and channel(f.channel)
    and (f.action == "joined" or f.action == "left" or f.action == "heartbeat")
    and nonempty(f.userId) and #f.userId <= 128
    and (f.displayName == nil or (str(f.displayName) and #f.displayName <= 255))
    and (f.sentAt == nil or str(f.sentAt))
end

-- Client -> daemon: "e2ee", "kex_init", "pairing", "subscribe", "unsubscribe", "presence".
function M.client_kind(f)
  if e2ee(f) then return "e2ee" end
  if kex_init(f) then return "kex_init" end
  if pairing_request(f) then return "pairing" end
  if subscribe(f) then return "subscribe" end
  if unsubscribe(f) then return "unsubscribe" end
  if viewer_presence(f) then return "presence" end
  return nil
end

local function kex_response(f)
  if f.type ~= "relay_key_exchange_response" or not profile(f.profile) or not str(f.requestId)
    or not str(f.sessionId) or not str(f.proof) then return false end
  if f.version == 3 then
    return str(f.daemonPublicKey) and str(f.daemonEphemeralPublicKey) and str(f.encryptedMetadata) and int_min(f.epoch, 1)
  end
  return f.version == 2 and str(f.daemonNonce) and type(f.epoch) == "number"
end

local function pairing_response(f)
  if f.type ~= "relay_pairing_offer_response" and f.type ~= "relay_pairing_redeem_response" then return false end
  if not nonempty(f.requestId) or type(f.ok) ~= "boolean" then return false end
  if f.ok == false then return nonempty(f.errorCode) end
  if f.type == "relay_pairing_offer_response" then
    return nonempty(f.daemonChannelPublicKey) and nonempty(f.encIv) and nonempty(f.encTag) and nonempty(f.encCiphertext)
  end
  return true
end

local function session_event(f)
  return f.schema == "viewport.session_event_relay_frame/v1" and channel(f.channel)
    and type(f.event) == "table" and f.event[1] == nil
end

-- Daemon -> clients: "e2ee", "key_update", "kex_response", "pairing_response", "session_event".
function M.daemon_kind(f)
  if e2ee(f) then return "e2ee" end
  if f.type == "relay_key_update_required" and str(f.sessionId) and type(f.nextEpoch) == "number" then
    return "key_update"
  end
  if kex_response(f) then return "kex_response" end
  if pairing_response(f) then return "pairing_response" end
  if session_event(f) then return "session_event" end
  return nil
end

M.session_kinds = { subscribe = true, unsubscribe = true, presence = true }

-- noise-ikpsk2 is the stronger profile (it adds the pairing PSK).
local strength = { ["noise-ik"] = 1, ["noise-ikpsk2"] = 2 }
function M.weaker(frame_profile, claimed)
  return frame_profile ~= nil and claimed ~= nil and (strength[frame_profile] or 0) < (strength[claimed] or 0)
end

return M
