// SCAN through twem with node `redis` 6.3 (`scanIterator`) and ioredis 6.0
// (`scanStream`), default options, against twem or redis-server.
//
// Usage: see common.mjs. The harness runs the proxy mode with THREE servers
// and passes them as --backends: SCAN through twem must return every key of
// every server exactly once (nothing changing meanwhile), with MATCH, COUNT
// and TYPE as on one server. Both libraries keep the cursor as a string
// (node-redis stops when it is '0'), so any decimal cursor works for them.

import { createClient } from 'redis';
import Redis from 'ioredis';
import { Runner, check, parseArgs } from './common.mjs';

const NAME = 'node_scan';
const a = parseArgs(NAME);
const P = a.prefix;
const run = new Runner(NAME, a);
const N = 2000;
const want = new Set(Array.from({ length: N }, (_, i) => `${P}:k:${i}`));

function sameSet(got, what) {
  const set = new Set(got);
  check(got.length === set.size, `${what}: no key twice`, got.length - set.size);
  const missing = [...want].filter((k) => !set.has(k));
  const extra = [...set].filter((k) => !want.has(k));
  check(missing.length === 0 && extra.length === 0, `${what}: every key once`,
    got.length, missing.slice(0, 5), extra.slice(0, 5));
}

async function nodeRedis(host = a.host, port = a.port) {
  const c = createClient({ socket: { host, port } });
  c.on('error', () => {});
  await c.connect();
  return c;
}

await run.run('fill', async () => {
  const c = await nodeRedis();
  try {
    const multi = [];
    for (let i = 0; i < N; i++) multi.push(c.set(`${P}:k:${i}`, String(i)));
    for (let i = 0; i < 10; i++) multi.push(c.hSet(`${P}:h:${i}`, 'f', String(i)));
    await Promise.all(multi);
    if (a.mode === 'proxy') {
      const per = [];
      for (const b of a.backendHostPorts) {
        const d = await nodeRedis(b.host, b.port);
        per.push(await d.dbSize());
        d.destroy();
      }
      check(per.every((n) => n > 0), 'keys on every server', per);
      console.log(`     keys per server: ${JSON.stringify(per)}`);
    }
    await new Promise((r) => setTimeout(r, 300)); // let rehashing settle
  } finally {
    c.destroy();
  }
});

await run.run('node_redis_scanIterator', async () => {
  const c = await nodeRedis();
  try {
    const got = [];
    let batches = 0;
    for await (const keys of c.scanIterator({ MATCH: `${P}:k:*`, COUNT: 100 })) {
      check(Array.isArray(keys), 'scanIterator yields arrays of keys', keys);
      got.push(...keys);
      batches++;
    }
    sameSet(got, 'scanIterator MATCH');
    console.log(`     ${batches} SCAN calls`);
    const hashes = [];
    for await (const keys of c.scanIterator({ MATCH: `${P}:*`, TYPE: 'hash', COUNT: 500 })) hashes.push(...keys);
    check(hashes.length === 10 && new Set(hashes).size === 10, 'scanIterator TYPE hash', hashes.length);
    const r = await c.scan('0', { MATCH: `${P}:k:*`, COUNT: 10 });
    check(typeof r.cursor === 'string' && /^[0-9]+$/.test(r.cursor), 'cursor is a decimal string', r.cursor);
  } finally {
    c.destroy();
  }
});

await run.run('ioredis_scanStream', async () => {
  const c = new Redis({ host: a.host, port: a.port, lazyConnect: false });
  try {
    const got = await new Promise((resolve, reject) => {
      const keys = [];
      const s = c.scanStream({ match: `${P}:k:*`, count: 100 });
      s.on('data', (batch) => keys.push(...batch));
      s.on('end', () => resolve(keys));
      s.on('error', reject);
    });
    sameSet(got, 'scanStream MATCH');
    const [cursor] = await c.scan('0', 'MATCH', `${P}:k:*`, 'COUNT', 10);
    check(typeof cursor === 'string' && /^[0-9]+$/.test(cursor), 'ioredis cursor is a decimal string', cursor);
  } finally {
    c.disconnect();
  }
});

run.finish();
