// ioredis 6.0 at its default options against twem or redis-server: RESP3
// (`hello 3`, lower-case commands), CLIENT SETINFO, then the INFO ready check.
// Usage: see common.mjs. Options other than host/port only change what
// happens after a failure (no reconnect loop, no offline retries, connect()
// reports the handshake): the protocol and handshake are ioredis's defaults.

import Redis from 'ioredis';
import { CheckFailed, LUA_SET_INCR, Runner, check, checkInfoText, diagResp2, expectError, parseArgs, same, transactionCrossServer } from './common.mjs';

const NAME = 'ioredis';
const a = parseArgs(NAME);
const P = a.prefix;
const T = a.tag;
const run = new Runner(NAME, a);
const clients = [];

async function client(extra = {}) {
  const opts = {
    host: a.host,
    port: a.port,
    lazyConnect: true, // so connect() reports a failed handshake to the check
    retryStrategy: () => null, // fail instead of reconnecting forever
    maxRetriesPerRequest: 0,
    ...extra,
  };
  if (diagResp2()) opts.protocol = 2;
  const c = new Redis(opts);
  // ioredis reports a failed handshake or ready check as an 'error' event
  // and then only "Connection is closed.": keep the event's text.
  let lastError = null;
  c.on('error', (e) => { lastError = e; });
  c.defineCommand('setIncr', { numberOfKeys: 2, lua: LUA_SET_INCR });
  clients.push(c);
  try {
    await c.connect();
  } catch (e) {
    throw new CheckFailed(`connect failed: ${e?.message ?? e}${lastError ? ` after error: ${lastError.message}` : ''}`);
  }
  check(c.status === 'ready', 'client ready (handshake and INFO ready check passed)', c.status);
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
  same(await r.incrby(n, 41), 42, 'INCRBY');
  same(await r.expire(k, 100), 1, 'EXPIRE');
  const ttl = await r.ttl(k);
  check(ttl > 0 && ttl <= 100, 'TTL after EXPIRE 100', ttl);
  same(await r.set(`${P}:ex`, 'v', 'EX', 50), 'OK', 'SET EX');
  same(await r.get(`${P}:missing`), null, 'GET missing');
});

await run.run('hashes', async () => {
  const r = await client();
  const h = `${P}:h`;
  same(await r.hset(h, { a: '1', b: 'two' }), 2, 'HSET object');
  same(await r.hgetall(h), { a: '1', b: 'two' }, 'HGETALL gives an object');
  same(await r.hgetall(`${P}:nohash`), {}, 'HGETALL missing');
});

await run.run('zsets', async () => {
  const r = await client();
  const z = `${P}:z`;
  same(await r.zadd(z, 1.5, 'm1', -2.25, 'm2'), 2, 'ZADD');
  // ioredis's default (legacy) reply mapping flattens WITHSCORES into
  // strings, on RESP3 as on RESP2.
  const got = await r.zrange(z, 0, -1, 'WITHSCORES');
  same(got, ['m2', '-2.25', 'm1', '1.5'], 'ZRANGE WITHSCORES');
  same(parseFloat(got[1]), -2.25, 'score parses as a float');
  same(await r.zscore(z, 'm1'), '1.5', 'ZSCORE');
});

await run.run('pipeline_1000', async () => {
  const r = await client();
  const p = r.pipeline();
  for (let i = 0; i < 500; i++) p.set(`${P}:pl:${i}`, String(i));
  for (let i = 0; i < 500; i++) p.incrby(`${P}:pl:${i}`, i);
  const got = await p.exec();
  same(got.length, 1000, 'reply count');
  const errs = got.filter(([e]) => e);
  check(errs.length === 0, 'no errors', errs.slice(0, 3));
  check(got.slice(0, 500).every(([, v]) => v === 'OK'), 'SET replies', got.slice(0, 5));
  const bad = got.slice(500).map(([, v], i) => [i, v]).filter(([i, v]) => v !== 2 * i);
  check(bad.length === 0, 'INCRBY replies in order', bad.slice(0, 5));
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
  same(got, [[null, 'OK'], [null, 1], [null, 2], [null, '1']], 'EXEC replies');
  same(await r.get(n), '2', 'applied exactly once');
  // WATCH: a change from another connection makes EXEC return null.
  const w = `${T}:tx:w`;
  await r.set(w, '10');
  const other = await client();
  same(await r.watch(w), 'OK', 'WATCH');
  await other.set(w, 'other');
  same(await r.multi().set(w, 'mine').exec(), null, 'EXEC after the WATCHed key changed is null');
  same(await r.get(w), 'other', 'aborted transaction applied nothing');
});

await run.run('transaction_cross_server', async () => {
  await transactionCrossServer(await client(), a.cross);
}, { proxyOnly: true });

await run.run('scripts', async () => {
  const r = await client();
  const k1 = `${T}:sc:s`;
  const k2 = `${T}:sc:n`;
  same(await r.setIncr(k1, k2, 'x', 5), 5, 'defineCommand script (EVALSHA, EVAL on NOSCRIPT)');
  same(await r.script('FLUSH'), 'OK', 'SCRIPT FLUSH');
  same(await r.setIncr(k1, k2, 'y', 2), 7, 'script after flush');
  same(await r.get(k1), 'y', 'script wrote KEYS[1]');
  const sha = await r.script('LOAD', "return redis.call('GET', KEYS[1])");
  same(await r.script('EXISTS', sha), [1], 'SCRIPT EXISTS after LOAD');
  same(await r.evalsha(sha, 1, k1), 'y', 'EVALSHA');
  same(await r.eval("return redis.call('INCR', KEYS[1])", 1, `${P}:ev`), 1, 'EVAL');
});

await run.run('streams', async () => {
  const r = await client();
  const s = `${P}:st`;
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(await r.xadd(s, '*', 'f', `v${i}`));
  check(ids.every((id) => typeof id === 'string' && id.includes('-')), 'XADD ids', ids);
  same(await r.xlen(s), 3, 'XLEN');
  const got = await r.xrange(s, '-', '+');
  same(got.map((e) => e[0]), ids, 'XRANGE ids');
  same(got[2][1], ['f', 'v2'], 'XRANGE fields');
});

await run.run('client_name', async () => {
  const name = `${P}-name`;
  const r = await client({ connectionName: name });
  same(await r.client('GETNAME'), name, 'CLIENT GETNAME returns connectionName');
});

await run.run('info', async () => {
  const r = await client();
  const info = await r.info();
  checkInfoText(info);
  check(/^loading:0/m.test(info) || !/^loading:/m.test(info), 'INFO not loading', info.slice(0, 200));
});

await run.run('crossslot', async () => {
  const r = await client();
  const [ka, kb] = a.cross;
  await r.del(ka);
  await r.del(kb);
  await r.rpush(ka, 'x', 'y');
  await expectError(r.rpoplpush(ka, kb), 'RPOPLPUSH across servers', 'CROSSSLOT');
  same(await r.lrange(ka, 0, -1), ['x', 'y'], 'source list unchanged');
  same(await r.exists(kb), 0, 'destination untouched');
  await r.del(ka);
  await r.sadd(ka, 'm');
  await expectError(r.smove(ka, kb, 'm'), 'SMOVE across servers', 'CROSSSLOT');
  same(await r.smembers(ka), ['m'], 'source set unchanged');
  same(await r.exists(kb), 0, 'destination untouched');
  await r.del(ka);
}, { proxyOnly: true });

await run.run('same_server_multikey', async () => {
  const r = await client();
  const src = `${T}:l:src`;
  const dst = `${T}:l:dst`;
  await r.rpush(src, 'a', 'b');
  same(await r.rpoplpush(src, dst), 'b', 'RPOPLPUSH tagged');
  same(await r.lrange(dst, 0, -1), ['b'], 'destination list');
  const ss = `${T}:set:src`;
  const sd = `${T}:set:dst`;
  await r.sadd(ss, 'm', 'n');
  same(await r.smove(ss, sd, 'm'), 1, 'SMOVE tagged');
  same(await r.smembers(sd), ['m'], 'destination set');
});

await Promise.allSettled(clients.map((c) => (c.status === 'ready' ? c.quit() : c.disconnect())));
run.finish();
