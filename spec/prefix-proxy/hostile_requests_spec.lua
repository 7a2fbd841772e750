-- Hostile requests through the prefix proxy, one table per class. Each entry is sent raw to
-- the proxy in front of an origin that records every byte (spec/support/hostile_support.lua): the
-- client must get the stated answer, no request relayhost refused may reach the origin as a
-- complete request, and no second request may ever be formed from one client request's bytes
-- (every smuggled request below carries "smuggled" in its target; the origin must never see it).
-- To close a new shape, add a row.
local helpers = require "helpers"
local rig_of = require "hostile_support"

local H = "Host: x\r\n"
local CLOSE = "Connection: close\r\n"
-- a complete request that must never reach the origin as one: the payload of a smuggling try
local SMUGGLED = "GET /api/smuggled-{id} HTTP/1.1\r\nHost: x\r\n\r\n"

local function post(fields, body)
  return "POST /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. fields .. "\r\n" .. body
end
local function chunked(body) return post("Transfer-Encoding: chunked\r\n", body) end
local function cl(value, body) return post("Content-Length: " .. value .. "\r\n", body or "abc") end
local function get_with(fields) return "GET /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. fields .. "\r\n" end

local classes = {
  -- How long the body is: Content-Length values. A length the server cannot represent or that
  -- collides with "no length" is refused, as nginx does (anything over 2^63-1).
  lengths = {
    { "plain Content-Length", cl("3"), status = 200, origin = 1 },
    { "leading zeros", cl("003"), status = 200, origin = 1 },
    { "OWS around the value", cl(" 3 "), status = 200, origin = 1 },
    { "UINT64_MAX (the old no-length sentinel)", cl("18446744073709551615", SMUGGLED), status = 400, origin = 0 },
    { "UINT64_MAX - 1", cl("18446744073709551614", SMUGGLED), status = 400, origin = 0 },
    { "2^63", cl("9223372036854775808", SMUGGLED), status = 400, origin = 0 },
    { "2^64 (overflow)", cl("18446744073709551616", SMUGGLED), status = 400, origin = 0 },
    { "a hundred digits", cl(("9"):rep(100), SMUGGLED), status = 400, origin = 0 },
    { "sign +", cl("+3"), status = 400, origin = 0 },
    { "sign -", cl("-1", SMUGGLED), status = 400, origin = 0 },
    { "hex", cl("0x3"), status = 400, origin = 0 },
    { "space inside", cl("1 2"), status = 400, origin = 0 },
    { "list", cl("3, 3"), status = 400, origin = 0 },
    { "empty", cl(""), status = 400, origin = 0 },
    { "trailing letter", cl("3a"), status = 400, origin = 0 },
    { "repeated, same value", post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"), status = 400, origin = 0 },
    { "repeated, different", post("Content-Length: 3\r\nContent-Length: 40\r\n", "abc" .. SMUGGLED), status = 400, origin = 0 },
    { "chunk size 2^63", chunked("8000000000000000\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "chunk size 2^64 - 1", chunked("ffffffffffffffff\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "chunk size overflow", chunked("1ffffffffffffffff\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
  },
  -- How the body is framed: Transfer-Encoding and chunks.
  framing = {
    { "chunked", chunked("3\r\nabc\r\n0\r\n\r\n"), status = 200, origin = 1 },
    { "chunked with an extension", chunked("3;a=b\r\nabc\r\n0\r\n\r\n"), status = 200, origin = 1 },
    { "chunked with a trailer", chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), status = 200, origin = 1 },
    { "Content-Length with Transfer-Encoding", post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED), status = 400, origin = 0 },
    { "Transfer-Encoding with Content-Length", post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\n" .. SMUGGLED), status = 400, origin = 0 },
    { "chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "chunked not last", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "gzip only", post("Transfer-Encoding: gzip\r\n", "abc"), status = 400, origin = 0 },
    { "gzip then chunked (a coding nobody decodes)", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "Transfer-Encoding repeated", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "Transfer-Encoding split over two fields", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "identity", post("Transfer-Encoding: identity\r\n", "abc"), status = 400, origin = 0 },
    { "xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), status = 400, origin = 0 },
    { "Transfer-Encoding on HTTP/1.0", "POST /api/{id} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. SMUGGLED, status = 400, origin = 0 },
    { "chunk data not ended by CRLF", chunked("3\r\nabcXX0\r\n\r\n" .. SMUGGLED), status = 400, origin = 0 },
    { "chunk data ended by bare LF", chunked("3\r\nabc\n0\r\n\r\n"), status = 400, origin = 0 },
    { "chunk size line ended by bare LF", chunked("3\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "last chunk then bare LF", chunked("3\r\nabc\r\n0\r\n\n" .. SMUGGLED), status = 400, origin = 0 },
    { "trailer ended by bare LF", chunked("3\r\nabc\r\n0\r\nX-T: 1\n\r\n"), status = 400, origin = 0 },
    { "trailer with obs-fold", chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), status = 400, origin = 0 },
    { "trailer with a bare CR", chunked("3\r\nabc\r\n0\r\nX-T: 1\r2\r\n\r\n"), status = 400, origin = 0 },
    { "chunk size 0x", chunked("0x3\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "chunk size negative", chunked("-3\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "space before the extension", chunked("3 ;a=b\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "control byte in an extension", chunked("3;a\1\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "bare LF in an extension", chunked("3;a=b\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "empty extension value", chunked("3;a=\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "quoted extension value", chunked("3;a=\"b c\"\r\nabc\r\n0\r\n\r\n"), status = 200, origin = 1 },
    { "empty extension name", chunked("3;=a\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    -- llhttp 8.1 reads ";;" after a token value as a separator (fuzz_framing found it)
    { "empty extension name after a token value", chunked("3;a=b;;c=d\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "extensions on two chunks", chunked("3;a=b\r\nabc\r\n0;c=d\r\n\r\n"), status = 200, origin = 1 },
    { "quote inside a token extension value", chunked("3;a=b\"c\"\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
    { "Content-Length in the trailers", chunked("3\r\nabc\r\n0\r\nContent-Length: 40\r\n\r\n"), status = 400, origin = 0 },
    { "Transfer-Encoding in the trailers", chunked("3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), status = 400, origin = 0 },
    { "no chunk size", chunked("\r\nabc\r\n0\r\n\r\n"), status = 400, origin = 0 },
  },
  -- The head: line endings, field names and values, the request line.
  head = {
    { "leading CRLF before the request line", "\r\n" .. get_with(""), status = 200, origin = 1 },
    { "bare LF after the request line", "GET /api/{id} HTTP/1.1\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "bare LF ending the head", "GET /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\n", status = 400, origin = 0 },
    { "bare LF inside a field", get_with("X: a\nContent-Length: 40\r\n"), status = 400, origin = 0 },
    { "bare CR inside a field", get_with("X: a\rb\r\n"), status = 400, origin = 0 },
    { "bare CR ending the head", "GET /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\rX", status = 400, origin = 0 },
    { "obs-fold", get_with("X: a\r\n b\r\n"), status = 400, origin = 0 },
    { "obs-fold with a tab", get_with("X: a\r\n\tb\r\n"), status = 400, origin = 0 },
    { "NUL in a value", get_with("X: a\0b\r\n"), status = 400, origin = 0 },
    { "control byte in a value", get_with("X: a\1b\r\n"), status = 400, origin = 0 },
    { "DEL in a value", get_with("X: a\127b\r\n"), status = 400, origin = 0 },
    { "space before the colon", get_with("Content-Length : 40\r\n"), status = 400, origin = 0 },
    { "space inside a name", get_with("X Y: 1\r\n"), status = 400, origin = 0 },
    { "empty name", get_with(": 1\r\n"), status = 400, origin = 0 },
    { "separator in a name", get_with("X@Y: 1\r\n"), status = 400, origin = 0 },
    { "DEL in a value", get_with("X-A: a\127b\r\n"), status = 400, origin = 0 },
    { "a control byte in a value", get_with("X-A: a\1b\r\n"), status = 400, origin = 0 },
    { "no colon", get_with("XY\r\n"), status = 400, origin = 0 },
    { "missing Host", "GET /api/{id} HTTP/1.1\r\n" .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "two Host fields", get_with("Host: y\r\n"), status = 400, origin = 0 },
    { "HTTP/1.0 without Host", "GET /api/{id} HTTP/1.0\r\n\r\n", status = 200, origin = 1 },
    { "two spaces after the method", "GET  /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "two spaces before the version", "GET /api/{id}  HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "fragment in the target", "GET /api/{id}#x HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "lower-case method", "get /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "unknown method", "FOO /api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "HTTP/1.2", "GET /api/{id} HTTP/1.2\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "HTTP/0.9", "GET /api/{id} HTTP/0.9\r\n" .. H .. CLOSE .. "\r\n", status = 505, origin = 0 },
    { "HTTP/2.0", "GET /api/{id} HTTP/2.0\r\n" .. H .. CLOSE .. "\r\n", status = 505, origin = 0 },
    { "no version (HTTP/0.9)", "GET /api/{id}\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n", status = 505, origin = 0 },
    { "lower-case http", "GET /api/{id} http/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "space after the version", "GET /api/{id} HTTP/1.1 \r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "space inside the target", "GET /api/{id} x HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "tab inside the target", "GET /api/{id}\tx HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "NUL inside the target", "GET /api/{id}\0x HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "8-bit byte inside the target", "GET /api/{id}\195\169 HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    -- OWS after a Connection token is still the token (llhttp 8.1 alone misses it): the
    -- request after a "close<TAB>" is never read
    { "Connection: close and a tab, then a pipelined request", "GET /api/{id} HTTP/1.1\r\n" .. H .. "Connection: close\t\r\n\r\n" .. SMUGGLED, status = 200, origin = 1 },
    { "CONNECT", "CONNECT x:443 HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 501, origin = 0 },
  },
  -- Where the request goes: the mount's boundary, in every spelling of a dot-segment
  -- (core/net/path.c: normalised, then refused if it still climbs or hides behind %2f/%5c/\).
  paths = {
    { "under the mount", "GET /api/{id}/x HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 200, origin = 1 },
    { "dot-dot climbing above the mount", "GET /api/../{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "dot-dot climbing twice", "GET /api/a/../../{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "absolute-form outside the mount", "GET http://x/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 404, origin = 0 },
    { "absolute-form under the mount", "GET http://x/api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 200, origin = 1 },
    { "absolute-form with a query but no path", "GET http://x?/api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "absolute-form with an odd scheme", "GET foo://x/api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "absolute-form without a path", "GET http://x HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 404, origin = 0 },
    { "absolute-form with two @ in the authority", "GET http://a@b@x/api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "target without a slash", "GET api/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "asterisk-form", "OPTIONS * HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 404, origin = 0 },
    { "encoded dot-dot above the mount", "GET /api/%2e%2e/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "upper-case encoded dot-dot", "GET /api/%2E%2E/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "half-encoded dot-dot", "GET /api/.%2e/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "dot-dot behind an encoded slash", "GET /api/..%2f{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "dot-dot behind an encoded backslash", "GET /api/a/%2e%2e%5c{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "dot-dot behind a backslash", "GET /api/a/..\\{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 400, origin = 0 },
    { "encoded dot-dot inside the mount", "GET /api/a/%2e%2e/{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 200, origin = 1 },
    { "dot-dot inside the mount", "GET /api/a/../{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 200, origin = 1 },
    { "encoded slash in the mount's name", "GET /api%2f{id} HTTP/1.1\r\n" .. H .. CLOSE .. "\r\n", status = 404, origin = 0 },
  },
}

describe("hostile requests through the prefix proxy", function()
  local rig
  setup(function() rig = rig_of.start() end)
  teardown(function() if rig then rig_of.stop(rig) end end)

  for _, class in ipairs({ "lengths", "framing", "head", "paths" }) do
    it(("%s: every shape gets its answer and reaches the origin only as allowed"):format(class), function()
      local failures = rig_of.run(rig, class, classes[class])
      assert.are.same({}, failures)
      assert.is_nil(rig.host:exited())
    end)
  end
end)

return classes
