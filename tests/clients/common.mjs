// Shared command line and check runner for the Node.js client programs.
//
//   node <program>.mjs HOST:PORT direct|proxy [--cross KEY_A KEY_B]
//        [--backends ADDR...] [--keep-going]
//
// direct: the target is one redis-server; checks needing two servers are skipped.
// proxy:  twem in front of two servers; --cross names two keys the harness
//         computed to live on different servers.
// --backends: the servers behind twem (proxy mode), host:port each, for
//         checks comparing twem's answers with what the servers hold; in
//         direct mode it defaults to the target itself.
// --keep-going: run every check and list all failures (default: stop at the
//         first). Exit status 0 only if every check passed.
// TWEM_CLIENT_DIAG_RESP2=1 forces RESP2: a diagnostic only (the harness never
// sets it), to see what else fails while HELLO 3 is unsupported.

import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual, inspect } from 'node:util';

export class CheckFailed extends Error {}

export function check(cond, what, ...got) {
  if (!cond) {
    const detail = got.length ? ` (got: ${got.map((g) => inspect(g, { depth: 4 })).join(', ')})` : '';
    throw new CheckFailed(what + detail);
  }
}

export function same(got, want, what) {
  check(isDeepStrictEqual(got, want), `${what}: want ${inspect(want, { depth: 4 })}`, got);
}

/** Await `promise`; it must reject (with text containing `contains`, if given). */
export async function expectError(promise, what, contains) {
  let got;
  try {
    got = await promise;
  } catch (e) {
    const text = String(e?.message ?? e);
    if (contains !== undefined) check(text.includes(contains), `${what}: error should mention ${contains}`, text);
    return e;
  }
  throw new CheckFailed(`${what}: expected an error, got a reply ${inspect(got, { depth: 4 })}`);
}

export function diagResp2() {
  return process.env.TWEM_CLIENT_DIAG_RESP2 === '1';
}

export function parseArgs(name) {
  const argv = process.argv.slice(2);
  const usage = `usage: ${name} HOST:PORT direct|proxy [--cross KEY_A KEY_B] [--keep-going]`;
  const a = { keepGoing: false, cross: null, backends: [] };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--keep-going') a.keepGoing = true;
    else if (argv[i] === '--cross') { a.cross = [argv[i + 1], argv[i + 2]]; i += 2; }
    else if (argv[i] === '--backends') {
      while (i + 1 < argv.length && !argv[i + 1].startsWith('--')) a.backends.push(argv[++i]);
    }
    else pos.push(argv[i]);
  }
  if (pos.length !== 2 || !['direct', 'proxy'].includes(pos[1])) { console.error(usage); process.exit(2); }
  if (pos[1] === 'proxy' && !(a.cross && a.cross[0] && a.cross[1])) {
    console.error(`${usage}\nproxy mode needs --cross KEY_A KEY_B`);
    process.exit(2);
  }
  const i = pos[0].lastIndexOf(':');
  a.host = pos[0].slice(0, i) || '127.0.0.1';
  a.port = Number(pos[0].slice(i + 1));
  a.mode = pos[1];
  if (a.backends.length === 0 && a.mode === 'direct') a.backends = [pos[0]];
  a.backendHostPorts = a.backends.map((b) => {
    const j = b.lastIndexOf(':');
    return { host: b.slice(0, j) || '127.0.0.1', port: Number(b.slice(j + 1)) };
  });
  // Unique per run, so reruns against the same servers never collide.
  a.prefix = 't' + randomBytes(5).toString('hex');
  a.tag = `{${a.prefix}}`; // keys built with the tag share one server
  return a;
}

export class Runner {
  constructor(name, args) {
    this.name = name;
    this.args = args;
    this.failed = [];
    this.t0 = Date.now();
  }

  async run(checkName, fn, { proxyOnly = false } = {}) {
    if (proxyOnly && this.args.mode !== 'proxy') {
      console.log(`skip ${checkName}: needs two servers (proxy mode)`);
      return;
    }
    const t = Date.now();
    try {
      // A hung check (a reply that never comes) fails instead of hanging.
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailed('no result within 30 s')), 30000);
      });
      try {
        await Promise.race([fn(), timeout]);
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      const msg = e instanceof CheckFailed ? e.message : `${e?.constructor?.name ?? 'Error'}: ${e?.message ?? e}`;
      console.log(`FAIL ${this.name} [${this.args.mode}] ${checkName}: ${msg}`);
      if (!(e instanceof CheckFailed) && process.env.TWEM_CLIENT_TRACE) console.log(e);
      this.failed.push(checkName);
      if (!this.args.keepGoing) this.finish();
      return;
    }
    console.log(`ok   ${checkName} (${((Date.now() - t) / 1000).toFixed(2)}s)`);
  }

  finish() {
    const took = ((Date.now() - this.t0) / 1000).toFixed(1);
    if (this.failed.length) {
      console.log(`${this.name} [${this.args.mode}]: ${this.failed.length} check(s) failed: ${this.failed.join(', ')} (${took}s)`);
      process.exit(1);
    }
    console.log(`${this.name} [${this.args.mode}]: all checks passed (${took}s)`);
    process.exit(0);
  }
}

// KEYS[1] = a string set to ARGV[1]; KEYS[2] = a counter incremented by ARGV[2].
export const LUA_SET_INCR =
  "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[2], ARGV[2])";

// Checks whose steps are the same for ioredis and node-redis (the calls
// below have one name and shape in both): one copy, run with each client.

/** transaction_cross_server: MULTI over keys `ka`, `kb` of two servers is
 *  refused, changes neither key and leaves the connection usable. */
export async function transactionCrossServer(r, [ka, kb]) {
  await r.del(ka);
  await r.del(kb);
  const e = await expectError(r.multi().incr(ka).incr(kb).exec(), 'transaction over two servers');
  console.log(`     (refused with: ${e?.constructor?.name}: ${e?.message})`);
  same(await r.get(ka), null, 'first key untouched');
  same(await r.get(kb), null, 'second key untouched');
  same(await r.ping(), 'PONG', 'connection still usable');
}

/** The part of the info check both libraries share: INFO is the server's text. */
export function checkInfoText(info) {
  check(typeof info === 'string', 'INFO is a string', typeof info);
  check(/^redis_version:/m.test(info), 'INFO has redis_version', info.slice(0, 200));
}
