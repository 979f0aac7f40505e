// A Node.js LLM gateway as people write them: a `node:http` server that
// forwards every request to an HTTPS provider with Node's own `https`
// (OpenSSL inside the node executable, memory BIOs, keep-alive agent) and
// streams the answer back with `res.write` as it arrives (chunked to the
// client), whatever it is: SSE, JSON, errors.
// Usage: node gateway.js LISTEN_PORT PROVIDER_HOST PROVIDER_PORT [fetch];
// with `fetch`, the provider is called with Node's fetch (undici) instead
// (run with NODE_TLS_REJECT_UNAUTHORIZED=0 for the tests' self-signed
// certificate). Prints "listening" once it accepts connections.
'use strict';
const http = require('http');
const https = require('https');

const [listenPort, host, port, client] = process.argv.slice(2);
const agent = new https.Agent({ keepAlive: true, maxSockets: 8 });

const server = http.createServer((req, res) => {
  const parts = [];
  req.on('data', (c) => parts.push(c));
  req.on('end', () => {
    const body = Buffer.concat(parts);
    const headers = { 'content-type': req.headers['content-type'] || 'application/json', 'content-length': body.length };
    if (req.headers['x-request-id']) headers['x-request-id'] = req.headers['x-request-id'];
    if (req.headers.authorization) headers.authorization = req.headers.authorization;
    if (client === 'fetch') {
      viaFetch(req, res, body, headers);
      return;
    }
    const up = https.request(
      { host, port: Number(port), path: req.url, method: req.method, agent, rejectUnauthorized: false, headers },
      (upRes) => {
        const out = { 'content-type': upRes.headers['content-type'] || 'application/json' };
        if (upRes.headers['x-request-id']) out['x-request-id'] = upRes.headers['x-request-id'];
        res.writeHead(upRes.statusCode, out);
        upRes.on('data', (c) => res.write(c));
        upRes.on('end', () => res.end());
      },
    );
    up.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: String(e), type: 'gateway_error' } }));
    });
    up.end(body);
  });
});
async function viaFetch(req, res, body, headers) {
  delete headers['content-length'];
  try {
    const up = await fetch(`https://${host}:${port}${req.url}`, { method: req.method, headers, body });
    const out = { 'content-type': up.headers.get('content-type') || 'application/json' };
    if (up.headers.get('x-request-id')) out['x-request-id'] = up.headers.get('x-request-id');
    res.writeHead(up.status, out);
    for await (const chunk of up.body) res.write(chunk);
    res.end();
  } catch (e) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: String(e), type: 'gateway_error' } }));
  }
}

server.keepAliveTimeout = 30000;
server.listen(Number(listenPort), '127.0.0.1', () => console.log('listening'));
