// A raw TCP origin for the hostile-client specs: it records every byte it receives and every
// request it can make out of them, and answers each complete request with a fixed response.
//
//   node recording-origin.js LOG   (prints "port N" once listening)
//
// LOG gets one JSON line per event: {"conn":N,"request":{method,target,headers,body}} for each
// complete request, {"conn":N,"garbage":"…"} for bytes that do not start a request, and
// {"conn":N,"closed":true,"raw":"…"} with all the connection's bytes when it ends.
//
// The parser is deliberately lenient, like the origins a relay fronts (bare LF line endings,
// any Transfer-Encoding mentioning chunked, the first Content-Length): whatever such an origin
// could read as a request, it counts as one. That is what makes a smuggled request visible.
'use strict';
const net = require('net');
const fs = require('fs');

const log = process.argv[2];
const ANSWER = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\norigin';

function record(obj) { fs.appendFileSync(log, JSON.stringify(obj) + '\n'); }

// Reads one CRLF- or LF-ended line at off: [line, next offset] or null when incomplete.
function line(buf, off) {
  const lf = buf.indexOf(10, off);
  if (lf < 0) return null;
  const end = lf > off && buf[lf - 1] === 13 ? lf - 1 : lf;
  return [buf.toString('latin1', off, end), lf + 1];
}

// A chunked body from off: [body, next offset], null when incomplete, 'bad' when not chunked.
function chunked(buf, off) {
  const parts = [];
  for (;;) {
    const l = line(buf, off);
    if (!l) return null;
    const m = /^\s*([0-9a-fA-F]+)/.exec(l[0]);
    if (!m) return 'bad';
    const size = parseInt(m[1], 16);
    off = l[1];
    if (size === 0) {
      for (;;) { // trailers up to an empty line
        const t = line(buf, off);
        if (!t) return null;
        off = t[1];
        if (t[0] === '') return [Buffer.concat(parts), off];
      }
    }
    if (buf.length < off + size) return null;
    parts.push(buf.subarray(off, off + size));
    off += size;
    const end = line(buf, off); // lenient: whatever ends the line after the data
    if (!end) return null;
    off = end[1];
  }
}

// One request from the start of buf: {request, used}, null when incomplete, {garbage} otherwise.
function parse(buf) {
  let off = 0;
  while (off < buf.length && (buf[off] === 13 || buf[off] === 10)) off++;
  const first = line(buf, off);
  if (!first) return off === buf.length ? null : (buf.length - off > 65536 ? { garbage: true } : null);
  const m = /^([!-~]+) +(\S+) +HTTP\/\d\.\d\s*$/.exec(first[0]);
  if (!m) return { garbage: true };
  const headers = [];
  off = first[1];
  for (;;) {
    const l = line(buf, off);
    if (!l) return null;
    off = l[1];
    if (l[0] === '') break;
    const c = l[0].indexOf(':');
    headers.push([c < 0 ? l[0] : l[0].slice(0, c).trim(), c < 0 ? '' : l[0].slice(c + 1).trim()]);
  }
  const get = (n) => headers.filter((h) => h[0].toLowerCase() === n).map((h) => h[1]);
  let body = Buffer.alloc(0);
  if (get('transfer-encoding').some((v) => /chunked/i.test(v))) {
    const r = chunked(buf, off);
    if (r === null) return null;
    if (r === 'bad') return { garbage: true };
    [body, off] = r;
  } else if (get('content-length').length) {
    const n = parseInt(get('content-length')[0], 10);
    if (!(n >= 0)) return { garbage: true };
    if (buf.length < off + n) return null;
    body = buf.subarray(off, off + n);
    off += n;
  }
  return { request: { method: m[1], target: m[2], headers, body: body.toString('latin1') }, used: off };
}

let conns = 0;
const server = net.createServer((sock) => {
  const id = ++conns;
  let buf = Buffer.alloc(0), all = [], dead = false;
  sock.on('data', (d) => {
    all.push(d);
    if (dead) return;
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const r = parse(buf);
      if (!r) break;
      if (r.garbage) {
        record({ conn: id, garbage: buf.toString('latin1', 0, 200) });
        dead = true;
        sock.end();
        break;
      }
      record({ conn: id, request: r.request });
      buf = buf.subarray(r.used);
      sock.write(ANSWER);
    }
  });
  sock.on('error', () => {});
  sock.on('close', () => record({ conn: id, closed: true, raw: Buffer.concat(all).toString('latin1') }));
});
server.listen(0, '127.0.0.1', () => { console.log('port ' + server.address().port); });
