// node `redis` 6.3 (@redis/client) at its default options against twem or
// redis-server: RESP3 (HELLO 3 [SETNAME]) and the whole handshake pipelined.
// Usage: see common.mjs. `reconnectStrategy: false` only stops the reconnect
// loop after a failure; the protocol and handshake are node-redis's defaults.

import { createClient, defineScript } from 'redis';
import { LUA_SET_INCR, Runner, check, checkInfoText, diagResp2, expectError, parseArgs, same, transactionCrossServer } from './common.mjs';

const NAME = 'node_redis';
const a = parseArgs(NAME);
const P = a.prefix;
const T = a.tag;
const run = new Runner(NAME, a);
const clients = [];

const scripts = {
  setIncr: defineScript({
    NUMBER_OF_KEYS: 2,
    SCRIPT: LUA_SET_INCR,
    parseCommand(parser, k1, k2, value, by) {
      parser.pushKey(k1);
      parser.pushKey(k2);
      parser.push(value);
      parser.push(String(by));
    },
    transformReply: undefined,
  }),
};

async function client(extra = {}) {
  const opts = {
    socket: { host: a.host, port: a.port, reconnectStrategy: false, connectTimeout: 10000 },
    scripts,
    ...extra,
  };
  if (diagResp2()) opts.RESP = 2;
  const c = createClient(opts);
  c.on('error', () => {}); // surfaced through the rejected promises instead
  clients.push(c);
  await c.connect();
  return c;
}

await run.run('connect', async () => {
  const r = await client();
  same(await r.ping(), 'PONG', 'PING');
  same(await r.set(`${P}:c`, 'v'), 'OK', 'SET after connect');
});

await run.run('strings', async () => {
  const r = await client();
  const k = `${P}:s`;
  const n = `${P}:n`;
  same(await r.set(k, 'hello'), 'OK', 'SET');
  same(await r.get(k), 'hello', 'GET');
  same(await r.incr(n), 1, 'INCR');
  same(await r.incrBy(n, 41), 42, 'INCRBY');
  same(await r.ttl(k), -1, 'TTL without expiry');
  same(await r.expire(k, 100), 1, 'EXPIRE');
  const ttl = await r.ttl(k);
  check(ttl > 0 && ttl <= 100, 'TTL after EXPIRE 100', ttl);
  same(await r.get(`${P}:missing`), null, 'GET missing');
});

await run.run('hashes', async () => {
  const r = await client();
  const h = `${P}:h`;
  same(await r.hSet(h, { a: '1', b: 'two' }), 2, 'HSET object');
  const got = await r.hGetAll(h);
  same({ ...got }, { a: '1', b: 'two' }, 'HGETALL content');
  check(typeof got === 'object' && !Array.isArray(got), 'HGETALL gives an object', got);
});

await run.run('zsets', async () => {
  const r = await client();
  const z = `${P}:z`;
  same(await r.zAdd(z, [{ score: 1.5, value: 'm1' }, { score: -2.25, value: 'm2' }]), 2, 'ZADD');
  same(await r.zRangeWithScores(z, 0, -1), [{ value: 'm2', score: -2.25 }, { value: 'm1', score: 1.5 }],
    'ZRANGE WITHSCORES');
  same(await r.zScore(z, 'm1'), 1.5, 'ZSCORE is the number 1.5');
  same(await r.zScore(z, 'nope'), null, 'ZSCORE missing');
});

await run.run('pipeline_1000', async () => {
  const r = await client();
  const m = r.multi();
  for (let i = 0; i < 500; i++) m.set(`${P}:pl:${i}`, String(i));
  for (let i = 0; i < 500; i++) m.incrBy(`${P}:pl:${i}`, i);
  const got = await m.execAsPipeline(); // no MULTI/EXEC: a plain pipeline
  same(got.length, 1000, 'reply count');
  check(got.slice(0, 500).every((x) => x === 'OK'), 'SET replies', got.slice(0, 5));
  const bad = got.slice(500).map((v, i) => [i, v]).filter(([i, v]) => v !== 2 * i);
  check(bad.length === 0, 'INCRBY replies in order', bad.slice(0, 5));
  // Auto-pipelining: 1000 commands issued in one tick go out together.
  const many = await Promise.all(Array.from({ length: 1000 }, (_, i) => r.get(`${P}:pl:${i % 500}`)));
  check(many.every((v, i) => v === String(2 * (i % 500))), 'auto-pipelined GETs', many.slice(0, 5));
});

await run.run('concurrency_50', async () => {
  const r = await client();
  const got = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    const k = `${P}:c:${i}`;
    for (let j = 0; j < 3; j++) await r.incr(k);
    await r.set(`${k}:s`, `v${i}`);
    return [await r.get(k), await r.get(`${k}:s`)];
  }));
  const bad = got.map((g, i) => [i, g]).filter(([i, g]) => g[0] !== '3' || g[1] !== `v${i}`);
  check(bad.length === 0, '50 concurrent promises see their own results', bad.slice(0, 5));
});

await run.run('transaction', async () => {
  const r = await client();
  const ka = `${T}:tx:a`;
  const n = `${T}:tx:n`;
  const got = await r.multi().set(ka, '1').incr(n).incr(n).get(ka).exec();
  same(got, ['OK', 1, 2, '1'], 'EXEC replies');
  same(await r.get(n), '2', 'applied exactly once');
  // WATCH on an isolated client: a change from elsewhere aborts EXEC.
  const w = `${T}:tx:w`;
  await r.set(w, '10');
  const iso = await client();
  await iso.watch(w);
  await r.set(w, 'other');
  await expectError(iso.multi().set(w, 'mine').exec(), 'EXEC after the WATCHed key changed');
  same(await r.get(w), 'other', 'aborted transaction applied nothing');
});

await run.run('transaction_cross_server', async () => {
  await transactionCrossServer(await client(), a.cross);
}, { proxyOnly: true });

await run.run('scripts', async () => {
  const r = await client();
  const k1 = `${T}:sc:s`;
  const k2 = `${T}:sc:n`;
  same(await r.setIncr(k1, k2, 'x', 5), 5, 'script first call (EVALSHA, EVAL on NOSCRIPT)');
  same(await r.scriptFlush(), 'OK', 'SCRIPT FLUSH');
  same(await r.setIncr(k1, k2, 'y', 2), 7, 'script after flush');
  same(await r.get(k1), 'y', 'script wrote KEYS[1]');
  const sha = await r.scriptLoad("return redis.call('GET', KEYS[1])");
  same(await r.scriptExists(sha), [1], 'SCRIPT EXISTS after LOAD');
  same(await r.evalSha(sha, { keys: [k1] }), 'y', 'EVALSHA');
});

await run.run('streams', async () => {
  const r = await client();
  const s = `${P}:st`;
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(await r.xAdd(s, '*', { f: `v${i}` }));
  check(ids.every((id) => typeof id === 'string' && id.includes('-')), 'XADD ids', ids);
  same(await r.xLen(s), 3, 'XLEN');
  const got = await r.xRange(s, '-', '+');
  same(got.map((e) => e.id), ids, 'XRANGE ids');
  same({ ...got[2].message }, { f: 'v2' }, 'XRANGE fields');
});

await run.run('client_name', async () => {
  const name = `${P}-name`;
  const r = await client({ name });
  same(await r.clientGetName(), name, 'CLIENT GETNAME returns the name option (sent in HELLO SETNAME)');
});

await run.run('info', async () => {
  const r = await client();
  const info = await r.info();
  checkInfoText(info);
  check(!/^loading:[^0]/m.test(info), 'INFO not loading', info.slice(0, 200));
});

await run.run('crossslot', async () => {
  const r = await client();
  const [ka, kb] = a.cross;
  await r.del(ka);
  await r.del(kb);
  await r.rPush(ka, ['x', 'y']);
  await expectError(r.rPopLPush(ka, kb), 'RPOPLPUSH across servers', 'CROSSSLOT');
  same(await r.lRange(ka, 0, -1), ['x', 'y'], 'source list unchanged');
  same(await r.exists(kb), 0, 'destination untouched');
  await r.del(ka);
  await r.sAdd(ka, 'm');
  await expectError(r.sMove(ka, kb, 'm'), 'SMOVE across servers', 'CROSSSLOT');
  same(await r.sMembers(ka), ['m'], 'source set unchanged');
  same(await r.exists(kb), 0, 'destination untouched');
  await r.del(ka);
}, { proxyOnly: true });

await run.run('same_server_multikey', async () => {
  const r = await client();
  const src = `${T}:l:src`;
  const dst = `${T}:l:dst`;
  await r.rPush(src, ['a', 'b']);
  same(await r.rPopLPush(src, dst), 'b', 'RPOPLPUSH tagged');
  same(await r.lRange(dst, 0, -1), ['b'], 'destination list');
  const ss = `${T}:set:src`;
  const sd = `${T}:set:dst`;
  await r.sAdd(ss, ['m', 'n']);
  same(await r.sMove(ss, sd, 'm'), 1, 'SMOVE tagged');
  same(await r.sMembers(sd), ['m'], 'destination set');
});

await Promise.allSettled(clients.map((c) => (c.isOpen ? c.quit() : undefined)));
run.finish();
