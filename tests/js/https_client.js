// A Node.js client (OpenSSL is linked into the node executable and driven
// through memory BIOs): after a line on stdin it sends COUNT sequential
// keep-alive POSTs to https://HOST:PORT/PATH and prints "done COUNT".
// The server is the tests' own, with a self-signed certificate.
'use strict';
const https = require('https');
const readline = require('readline');

const [host, port, count, path] = process.argv.slice(2);
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });

function post() {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host, port: Number(port), path, method: 'POST', agent, rejectUnauthorized: false,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: 'Bearer sk-test-canary',
        },
      },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

readline.createInterface({ input: process.stdin }).once('line', async () => {
  let done = 0;
  for (let i = 0; i < Number(count); i++) {
    if ((await post()) === 200) done++;
  }
  console.log(`done ${done}`);
  agent.destroy();
  process.exit(done === Number(count) ? 0 : 1);
});
