// A hostile WebSocket server for the flood specs (node `ws`): prints its port on stdout, then
// floods every client with 125-byte pings written straight to the socket and never reads what
// the client sends back (its pongs). Every 200 ms it prints how many bytes it has written in
// all, so a spec can see when the client stops reading.
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
const ping = Buffer.concat([Buffer.from([0x89, 125]), Buffer.alloc(125, 'p')]);
const chunk = Buffer.concat(Array(1000).fill(ping));
let written = 0;
wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
wss.on('connection', (ws) => {
  const s = ws._socket;
  s.pause(); // the pongs are never read
  s.removeAllListeners('data');
  const pump = () => {
    while (!s.destroyed) {
      written += chunk.length;
      if (!s.write(chunk)) return s.once('drain', pump);
    }
  };
  pump();
});
setInterval(() => console.log(JSON.stringify({ written })), 200);
