#!/usr/bin/env python3
"""Generate twem-proto/src/command/generated.rs from a redis-server's COMMAND.

The command table twem routes by is Redis's own: names, arities, flags and
key specs come from the `COMMAND` reply of a live redis-server (7.0 or
later), never from hand-copied lists. The routing policy (which commands
split, fan out, are answered locally or refused) is hand-written apart, in
twem-proto/src/command/policy.rs.

Usage:
    python3 scripts/gen-commands.py [--host H --port P] [--out FILE]
    python3 scripts/gen-commands.py --server redis-server [--out FILE]

With --host/--port it talks to a running server; otherwise it starts
`--server` (default: redis-server on PATH) on a free loopback port and stops
it afterwards. Output goes to FILE, or stdout with `--out -`.
The test tests/tests/command_table.rs runs this against the redis-server CI
installs and asserts the committed file is byte-identical to its output.

Python 3 standard library only.
"""

import argparse
import os
import socket
import subprocess
import sys
import time

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "twem-proto", "src", "command", "generated.rs")

# Command flags, in the order of their bits. A flag Redis reports that is
# not here stops the generator: a new flag may change how twem must route.
COMMAND_FLAGS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript",
    "blocking", "loading", "stale", "skip_monitor", "skip_slowlog", "asking",
    "fast", "no_auth", "may_replicate", "sentinel", "only_sentinel",
    "no_mandatory_keys", "protected", "module_getkeys", "module_no_cluster",
    "no_async_loading", "no_multi", "movablekeys", "allow_busy",
    "module_getchannels",
]

# Key spec flags, in the order of their bits.
KEY_FLAGS = [
    "RO", "RW", "OW", "RM", "access", "update", "insert", "delete",
    "not_key", "incomplete", "variable_flags",
]


class RespError(Exception):
    """An error reply from the server."""


def read_reply(f):
    """Read one RESP2/RESP3 reply from the file `f`."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise EOFError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+",):
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind in (b"*", b"~"):
        n = int(rest)
        if n < 0:
            return None
        return [read_reply(f) for _ in range(n)]
    if kind == b"%":
        n = int(rest)
        return [read_reply(f) for _ in range(2 * n)]
    raise ValueError("unexpected reply type %r" % kind)


def command(sock_file, sock, *args):
    """Send one command, return its reply."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return read_reply(sock_file)


def pairs(flat):
    """A flat [k1, v1, k2, v2, ...] list as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(host, port, deadline):
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flag_bits(names, known, what, owner):
    bits = []
    for n in names:
        if n not in known:
            sys.exit("gen-commands: %s %r of %s is new: add it to %s"
                     % (what, n, owner, "COMMAND_FLAGS" if what == "flag" else "KEY_FLAGS"))
        bits.append(known.index(n))
    return sorted(set(bits))


def flags_expr(names, known, what, owner, prefix):
    bits = flag_bits(names, known, what, owner)
    if not bits:
        return "0"
    return " | ".join(prefix + known[b].upper() for b in bits)


def key_spec_expr(spec, owner):
    spec = pairs(spec)
    flags = flags_expr(spec.get("flags", []), KEY_FLAGS, "key spec flag", owner, "K_")
    bs = pairs(spec["begin_search"])
    bs_spec = pairs(bs["spec"]) if bs["spec"] else {}
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % bs_spec["index"]
    elif bs["type"] == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (
            rust_str(bs_spec["keyword"]), bs_spec["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("gen-commands: begin_search type %r of %s" % (bs["type"], owner))
    fk = pairs(spec["find_keys"])
    fk_spec = pairs(fk["spec"]) if fk["spec"] else {}
    if fk["type"] == "range":
        find = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (
            fk_spec["lastkey"], fk_spec["keystep"], fk_spec["limit"])
    elif fk["type"] == "keynum":
        find = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, keystep: %d }" % (
            fk_spec["keynumidx"], fk_spec["firstkey"], fk_spec["keystep"])
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("gen-commands: find_keys type %r of %s" % (fk["type"], owner))
    return "KeySpec { flags: %s, begin: %s, find: %s }" % (flags, begin, find)


class Entry:
    def __init__(self, reply):
        self.name = reply[0].lower()
        self.arity = reply[1]
        self.flags = reply[2]
        self.first, self.last, self.step = reply[3], reply[4], reply[5]
        extra = reply[6:]
        # 7.0: acl categories, tips, key specs, subcommands.
        self.key_specs = extra[2] if len(extra) > 2 else []
        self.subs = sorted((Entry(s) for s in (extra[3] if len(extra) > 3 else [])),
                           key=lambda e: e.name)
        self.index = None
        self.sub_start = 0


def render(entries, version):
    # Top-level commands first, sorted; then each parent's subcommands,
    # contiguous and sorted, in the parents' order.
    flat = list(entries)
    for e in entries:
        e.sub_start = len(flat) if e.subs else 0
        flat.extend(e.subs)
    out = []
    w = out.append
    w("// @generated by scripts/gen-commands.py from the COMMAND reply of")
    w("// redis-server %s. Do not edit by hand: regenerate with" % version)
    w("//     python3 scripts/gen-commands.py --out twem-proto/src/command/generated.rs")
    w("// tests/tests/command_table.rs checks this file is byte-identical to the")
    w("// generator's output against the redis-server CI installs.")
    w("")
    w("use super::spec::*;")
    w("")
    w("/// The redis-server version this table was read from.")
    w("pub const REDIS_VERSION: &str = %s;" % rust_str(version))
    w("")
    w("/// How many top-level commands [`SPECS`] starts with (sorted by name);")
    w("/// the subcommands follow, grouped by parent.")
    w("pub const TOP: usize = %d;" % len(entries))
    w("")
    w("/// Every command and subcommand of Redis. A `const` so the table of")
    w("/// `command/mod.rs` is built from it at compile time; never copied at")
    w("/// run time.")
    w("#[allow(clippy::large_const_arrays)]")
    w("pub const SPECS: [Spec; %d] = [" % len(flat))
    for e in flat:
        # One line an entry: the file is diffed when Redis changes, and a
        # changed command then shows as one changed line.
        flags = flags_expr(e.flags, COMMAND_FLAGS, "flag", e.name, "F_")
        keys = ", ".join(key_spec_expr(ks, e.name) for ks in e.key_specs)
        w("    Spec { name: %s, arity: %d, flags: %s, legacy: (%d, %d, %d), keys: &[%s], subs: (%d, %d) },"
          % (rust_str(e.name), e.arity, flags, e.first, e.last, e.step, keys,
             e.sub_start, len(e.subs)))
    w("];")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--server", default="redis-server")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    proc = None
    port = args.port
    if port is None:
        port = free_port()
        proc = subprocess.Popen(
            [args.server, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = connect(args.host, port, time.time() + 10)
        f = sock.makefile("rb")
        info = command(f, sock, "INFO", "server")
        version = next(l.split(":", 1)[1].strip() for l in info.splitlines()
                       if l.startswith("redis_version:"))
        reply = command(f, sock, "COMMAND")
        sock.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    entries = sorted((Entry(r) for r in reply), key=lambda e: e.name)
    text = render(entries, version)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
