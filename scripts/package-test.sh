#!/usr/bin/env bash
# The Debian package end to end, as root on a Debian machine: build it
# (scripts/deb.sh), check `cargo install --path twem-server`, `dpkg -i`,
# run the unit's ExecStart line as the unit would (its user, its descriptor
# limit; no systemd needed) against a test
# config pointing at a redis-server on a free port, serve a request, rotate
# the log and reload with SIGHUP (a new pool appears, the log is reopened),
# stop with SIGTERM (exit 0), then `dpkg -r` and purge. Everything it started
# or installed is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "package-test.sh: needs root (dpkg -i); skipped" >&2
    exit 0
fi
for bin in dpkg redis-server redis-cli setpriv cargo-deb; do
    command -v "$bin" >/dev/null || { echo "package-test.sh: $bin not installed" >&2; exit 1; }
done
if dpkg-query -W -f='${Status}' twemproxy 2>/dev/null | grep -q "ok installed"; then
    echo "package-test.sh: a twemproxy package is already installed; not touching it" >&2
    exit 1
fi

pids=()
tmp=$(mktemp -d)
created_user=0
getent passwd twemproxy >/dev/null || created_user=1
installed=0
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$installed" = 1 ]; then dpkg -P twemproxy >/dev/null 2>&1 || true; fi
    if [ "$created_user" = 1 ] && getent passwd twemproxy >/dev/null; then
        userdel twemproxy 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "package-test.sh: FAILED: $*" >&2; exit 1; }

# free_port, wait_port.
source scripts/ports.sh

deb=$(bash scripts/deb.sh)
echo "== cargo install --path twem-server"
# The dist build deb.sh just made is reused (same target dir and profile).
CARGO_TARGET_DIR=target cargo install -q --locked --path twem-server --profile dist \
    --root "$tmp/cargo-install"
"$tmp/cargo-install/bin/twemproxy" -V 2>&1 | grep -q "^This is nutcracker-" \
    || fail "cargo install did not install a working twemproxy"
echo "== $deb"
dpkg-deb --contents "$deb"
dpkg -i "$deb" >/dev/null
installed=1

echo "== installed files"
for f in /usr/sbin/twemproxy /etc/twemproxy/nutcracker.yml \
    /usr/lib/systemd/system/twemproxy.service /etc/logrotate.d/twemproxy \
    /usr/share/man/man8/twemproxy.8.gz; do
    [ -f "$f" ] || fail "$f not installed"
done
getent passwd twemproxy >/dev/null || fail "no twemproxy user"
[ "$(stat -c %U /var/log/twemproxy)" = twemproxy ] || fail "/var/log/twemproxy not the user's"
dpkg-query -W -f='${Conffiles}\n' twemproxy | grep -q /etc/twemproxy/nutcracker.yml \
    || fail "the config is not a conffile"
/usr/sbin/twemproxy -t -c /etc/twemproxy/nutcracker.yml 2>&1 | grep -q "syntax is ok" \
    || fail "the shipped config does not pass -t"
if command -v file >/dev/null; then
    file /usr/sbin/twemproxy | grep -q "not stripped" && fail "the binary is not stripped"
fi
if command -v logrotate >/dev/null; then
    logrotate -d /etc/logrotate.d/twemproxy >/dev/null 2>&1 || fail "logrotate rejects its file"
fi
unit=/usr/lib/systemd/system/twemproxy.service
grep -qx 'Type=simple' "$unit" || fail "unit: Type"
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit" || fail "unit: ExecReload"
grep -qx 'User=twemproxy' "$unit" || fail "unit: User"
if command -v systemd-analyze >/dev/null; then
    # Offline check of the unit (no running systemd needed).
    out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze: $out"
    [ -z "$out" ] || fail "systemd-analyze: $out"
fi
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
[ -n "$nofile" ] || fail "unit: LimitNOFILE"

echo "== the unit's command line, as its user"
free_port; redis_port=$port
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" || fail "redis-server did not start"
free_port; proxy_port=$port
free_port; proxy_port2=$port
free_port; stats_port=$port
chmod 755 "$tmp"
conf="$tmp/nutcracker.yml"
write_conf() { # with a second pool when $1 = 2
    {
        printf 'test:\n  listen: 127.0.0.1:%s\n  redis: true\n  servers:\n   - 127.0.0.1:%s:1\n' \
            "$proxy_port" "$redis_port"
        if [ "$1" = 2 ]; then
            printf 'second:\n  listen: 127.0.0.1:%s\n  redis: true\n  servers:\n   - 127.0.0.1:%s:1\n' \
                "$proxy_port2" "$redis_port"
        fi
    } >"$conf.new"
    chmod 644 "$conf.new"
    mv "$conf.new" "$conf"
}
write_conf 1
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# The unit's line with the test's config and stats port.
cmdline=${exec_start//\/etc\/twemproxy\/nutcracker.yml/$conf}
cmdline=${cmdline//-s 22222/-s $stats_port}
[ "$cmdline" != "$exec_start" ] || fail "could not adapt ExecStart: $exec_start"
echo "$cmdline"
log=$(sed -n 's/.*-o \([^ ]*\).*/\1/p' <<<"$exec_start")
# systemd would set LimitNOFILE whatever the hard limit; a container may cap
# it lower, and root cannot go past that cap: then the cap is what we check.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$nofile" ]; then
    echo "note: hard descriptor limit $hard here, below the unit's $nofile; using $hard"
    nofile=$hard
fi
# shellcheck disable=SC2086 # the unit's words, split as systemd splits them
prlimit --nofile="$nofile:$nofile" \
    setpriv --reuid=twemproxy --regid=twemproxy --init-groups --inh-caps=-all -- $cmdline &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$proxy_port" || { cat "$log" >&2 || true; fail "twemproxy did not start"; }
[ "$(stat -c %U "/proc/$proxy_pid")" = twemproxy ] || fail "not running as twemproxy"
grep -q "^Max open files *$nofile" "/proc/$proxy_pid/limits" || fail "LimitNOFILE not applied"

[ "$(redis-cli -p "$proxy_port" set pkg:k v1)" = OK ] || fail "SET through the proxy"
[ "$(redis-cli -p "$proxy_port" get pkg:k)" = v1 ] || fail "GET through the proxy"
[ "$(redis-cli -p "$redis_port" get pkg:k)" = v1 ] || fail "the key is not on the backend"
echo "served a request"

echo "== logrotate-style rotation and reload (SIGHUP)"
[ -s "$log" ] || fail "nothing logged to $log"
mv "$log" "$log.1"
write_conf 2
kill -HUP "$proxy_pid"
wait_port "$proxy_port2" || { cat "$log" >&2 || true; fail "the reload did not add the new pool"; }
[ "$(redis-cli -p "$proxy_port2" get pkg:k)" = v1 ] || fail "GET through the new pool"
[ "$(redis-cli -p "$proxy_port" get pkg:k)" = v1 ] || fail "GET through the kept pool"
for _ in $(seq 1 100); do [ -s "$log" ] && break; sleep 0.05; done
[ -s "$log" ] || fail "the log file was not reopened"
[ "$(stat -c %U "$log")" = twemproxy ] || fail "the reopened log is not the user's"
echo "reloaded; the log reopened"

echo "== stop (SIGTERM)"
kill -TERM "$proxy_pid"
status=0
wait "$proxy_pid" || status=$?
[ "$status" = 0 ] || { cat "$log" >&2; fail "twemproxy exited $status on SIGTERM"; }
echo "stopped cleanly"

echo "== remove"
dpkg -r twemproxy >/dev/null
[ ! -e /usr/sbin/twemproxy ] || fail "dpkg -r left the binary"
dpkg -P twemproxy >/dev/null
installed=0
[ ! -e /etc/twemproxy/nutcracker.yml ] || fail "purge left the config"
[ ! -e /var/log/twemproxy ] || fail "purge left the logs"
echo "package-test.sh: the package installs, serves, reloads, stops and removes cleanly"
