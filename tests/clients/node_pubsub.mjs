// Pub/sub with node `redis` 6.3 and ioredis 6.0 at default options (RESP3)
// against twem or redis-server.
//
// Usage: see common.mjs. In proxy mode the channels are built from the
// --cross keys with the pool's `{}` hash tag, so a subscriber listens on
// channels of both servers. What these libraries do (HANDSHAKES.md):
// - both send the commands in lower case (`subscribe`, `psubscribe`, ...);
// - in RESP3 both let the SAME connection keep running ordinary commands
//   while subscribed (node-redis no longer needs `duplicate()` for it; with
//   RESP2 it would): replies and `>` pushes interleave on one connection;
// - node-redis resolves subscribe() once every channel's confirmation
//   arrived; ioredis resolves subscribe() with the count of the last one.

import { createClient } from 'redis';
import Redis from 'ioredis';
import { Runner, check, same, parseArgs } from './common.mjs';

const NAME = 'node_pubsub';
const a = parseArgs(NAME);
const P = a.prefix;
const run = new Runner(NAME, a);
const [TAG0, TAG1] = a.mode === 'proxy'
  ? [`{${a.cross[0]}}`, `{${a.cross[1]}}`]
  : [`{${P}x}`, `{${P}y}`];
const ch = (tag, name) => `${tag}:${P}:${name}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond, what, ms = 1000) {
  const end = Date.now() + ms;
  while (!cond()) {
    check(Date.now() < end, `${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

async function nodeRedis() {
  const c = createClient({ socket: { host: a.host, port: a.port } });
  c.on('error', () => {});
  await c.connect();
  return c;
}

await run.run('node_redis_subscribe_main_client', async () => {
  const c = await nodeRedis();
  const pub = await nodeRedis();
  try {
    const got = [];
    const c0 = ch(TAG0, 'n0');
    const c1 = ch(TAG1, 'n1');
    await c.subscribe([c0, c1], (m, channel) => got.push([channel, m]));
    // RESP3: the subscribed connection still answers ordinary commands.
    await c.set(ch(TAG1, 'k'), 'v');
    same(await c.get(ch(TAG1, 'k')), 'v', 'GET on the subscribed connection');
    same(await pub.publish(c0, 'a'), 1, 'PUBLISH to server 0 channel');
    same(await pub.publish(c1, 'b'), 1, 'PUBLISH to server 1 channel');
    await waitFor(() => got.length === 2, 'two messages');
    // Two servers: each server's messages keep their order; between servers
    // the proxy promises none (two connections), so compare as a set.
    same(got.slice().sort(), [[c0, 'a'], [c1, 'b']].sort(), 'messages');
    await c.unsubscribe();
    same(await pub.publish(c0, 'x'), 0, 'no receivers after unsubscribe');
    same(await c.get(ch(TAG1, 'k')), 'v', 'GET after unsubscribe');
  } finally {
    c.destroy();
    pub.destroy();
  }
});

await run.run('node_redis_duplicate_psubscribe', async () => {
  const c = await nodeRedis();
  const sub = c.duplicate();
  sub.on('error', () => {});
  await sub.connect();
  try {
    const got = [];
    const pat = `${P}:news:*`;
    await sub.pSubscribe(pat, (m, channel) => got.push([channel, m]));
    const c0 = `${P}:news:${TAG0}`;
    const c1 = `${P}:news:${TAG1}`;
    same(await c.publish(c0, 'p0'), 1, 'PUBLISH matched by the pattern (server 0)');
    same(await c.publish(c1, 'p1'), 1, 'PUBLISH matched by the pattern (server 1)');
    await waitFor(() => got.length === 2, 'two pattern messages');
    same(got.slice().sort(), [[c0, 'p0'], [c1, 'p1']].sort(), 'pmessages, each once (any order between servers)');
    await sleep(100);
    same(got.length, 2, 'no duplicate delivery');
    await sub.pUnsubscribe(pat);
    same(await c.publish(c0, 'x'), 0, 'no receivers after pUnsubscribe');
  } finally {
    sub.destroy();
    c.destroy();
  }
});

await run.run('ioredis_subscribe', async () => {
  const c = new Redis({ host: a.host, port: a.port });
  const pub = new Redis({ host: a.host, port: a.port });
  try {
    const got = [];
    c.on('message', (channel, m) => got.push(['message', channel, m]));
    c.on('pmessage', (pattern, channel, m) => got.push(['pmessage', pattern, channel, m]));
    const c0 = ch(TAG0, 'i0');
    const c1 = ch(TAG1, 'i1');
    same(await c.subscribe(c0, c1), 2, 'subscribe resolves with the count');
    const pat = `${P}:ipat:*`;
    same(await c.psubscribe(pat), 3, 'psubscribe count includes the channels');
    same(await c.get(ch(TAG0, 'none')), null, 'GET while subscribed (RESP3)');
    same(await pub.publish(c1, 'one'), 1, 'PUBLISH');
    same(await pub.publish(`${P}:ipat:${TAG0}`, 'two'), 1, 'PUBLISH matching the pattern');
    await waitFor(() => got.length === 2, 'two messages');
    // From two servers: no order promised between them.
    same(got.slice().sort(), [['message', c1, 'one'], ['pmessage', pat, `${P}:ipat:${TAG0}`, 'two']].sort(), 'messages');
    same(await c.punsubscribe(pat), 2, 'punsubscribe count');
    same(await c.unsubscribe(c0, c1), 0, 'unsubscribe count');
    same(await pub.publish(c1, 'x'), 0, 'no receivers left');
  } finally {
    c.disconnect();
    pub.disconnect();
  }
});

run.finish();
