// A real WebSocket upstream for the proxy specs (node `ws`). Prints its port on stdout.
// Echoes every message with its type; "close:CODE:REASON" closes with that code; "drop" kills
// the socket without a close frame; "burst:N" sends N messages. Picks "chat" when offered.
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  handleProtocols: (protocols) => (protocols.has('chat') ? 'chat' : false),
});
wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({ hello: req.url, protocol: ws.protocol, headers: req.headers }));
  ws.on('close', (code, reason) => console.log(JSON.stringify({ closed: code, reason: reason.toString() })));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text && text.startsWith('close:')) {
      const [, code, reason] = text.split(':');
      ws.close(Number(code), reason);
    } else if (text === 'drop') {
      ws.terminate();
    } else if (text && text.startsWith('burst:')) {
      for (let i = 0; i < Number(text.slice(6)); i++) ws.send('m' + i);
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});
