# Loopback port helpers for the scripts that start servers (examples.sh,
# package-test.sh): sourced, not run. Each caller has cd'ed to the repo root.

# Sets $port to a random port nothing listens on and not handed out before
# in this run (not in a subshell, so the list of handed-out ports persists).
used_ports=" "
free_port() {
    while :; do
        # Below Linux's ephemeral range (32768+), so no outgoing connection
        # of another process can be holding the port we pick.
        port=$((10000 + RANDOM % 22000))
        case "$used_ports" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports="$used_ports$port "
            return
        fi
    done
}

# Waits up to 10 s for something to listen on 127.0.0.1:$1; if nothing does,
# says so on stderr (naming the calling script) and returns 1.
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$(basename "$0"): nothing listening on 127.0.0.1:$1" >&2
    return 1
}
