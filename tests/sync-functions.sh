# nbd-replica: helpers of the sync tests (sourced after repl-functions.sh):
# a secondary on TCP behind tests/count-relay.py, which counts the
# replication link's bytes outside the product, and waiting for the
# initial sync.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.

# The secondary on TCP (start_secondary serves a Unix socket).
SEC_PORT=$(free_port)
sec_uri () {
    echo "nbds://replica@127.0.0.1:$SEC_PORT/?tls-psk-file=$TMPD/keys.psk"
}
# start_tcp_secondary FILE [OPTION...] [-- KEY=VALUE...]: OPTIONs go
# to nbdkit after our filter (-v, another --filter under ours), the
# KEY=VALUEs after the plugin's.
start_tcp_secondary ()
{
    local i file=$1 opts=() params=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    params=("$@")
    (
        [ -n "$NBDKIT_PRELOAD" ] && export LD_PRELOAD="$NBDKIT_PRELOAD"
        exec nbdkit -f -p "$SEC_PORT" -i 127.0.0.1 \
            --tls=require --tls-psk="$TMPD/keys.psk" --filter="$FILTER" \
            "${opts[@]}" file "$file" replica-role=secondary \
            replica-log="$TMPD/sec.log" \
            replica-log-size=64M replica-control="$TMPD/sec.ctl" \
            "${params[@]}"
    ) 2>>"$TMPD/sec.err" &
    SEC_PID=$!
    register_pid $SEC_PID
    for i in $(seq 1 300); do
        nbdinfo --size "$(sec_uri)" >/dev/null 2>&1 && return 0
        kill -0 $SEC_PID 2>/dev/null ||
            { cat "$TMPD/sec.err" >&2; fail "the secondary exited"; }
        sleep 0.1
    done
    fail "the secondary did not start within 30 s"
}

# start_relay COUNTFILE: the counting relay to the secondary; sets
# RELAY_PID and RELAY_PORT.
start_relay ()
{
    local i
    rm -f "$1"
    $RELAY 0 127.0.0.1 "$SEC_PORT" "$1" > "$TMPD/relay.out" \
        2>>"$TMPD/relay.err" &
    RELAY_PID=$!
    register_pid $RELAY_PID
    for i in $(seq 1 100); do
        grep -q '^ready' "$TMPD/relay.out" && break
        kill -0 $RELAY_PID 2>/dev/null ||
            { cat "$TMPD/relay.err" >&2; fail "the relay exited"; }
        sleep 0.1
    done
    RELAY_PORT=$(awk '/^ready/ { print $2 }' "$TMPD/relay.out")
    [ -n "$RELAY_PORT" ] || fail "the relay did not start"
}

# stop_relay COUNTFILE: SIGTERM, then the final counts are in COUNTFILE.
stop_relay ()
{
    kill -TERM $RELAY_PID
    wait $RELAY_PID || fail "the relay failed"
}

# relay_total COUNTFILE: bytes both ways.
relay_total ()
{
    /usr/bin/python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(c["up"] + c["down"])' "$1"
}

start_tcp_primary ()
{
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
        file "$1" replica-log="$TMPD/pri.log" replica-log-size=64M \
        replica-control="$TMPD/pri.ctl" replica-mode=sync \
        replica-peer="nbds://replica@127.0.0.1:$RELAY_PORT/" \
        replica-tls-psk="$TMPD/keys.psk"
    PRI_PID=$NBDKIT_PID
}

# status_get CTL KEY...: the values, space-separated, from one status.
status_get ()
{
    local ctl=$1
    shift
    "$REPLICACTL" --control "$ctl" status --json |
        /usr/bin/python3 -c '
import json, sys
o = json.load(sys.stdin)
print(" ".join(str(o.get(k)) for k in sys.argv[1:]))' "$@"
}

# wait_initial_sync SECONDS [STAMPLOG]: until the primary's sync phase
# is over (back to "none" after at least one pass) and wait-synced
# returns.  Sets SAW_SYNC (a status showed the primary in initial-sync),
# SAW_INCONSISTENT (the secondary's state "inconsistent"), and, with
# STAMPLOG, ACKED_IN_SYNC: the writes acknowledged while the primary
# was seen still in initial-sync.
wait_initial_sync ()
{
    local secs=$1 stamplog=${2:-} end=$((SECONDS + $1)) phase passes st
    SAW_SYNC=0 SAW_INCONSISTENT=0 ACKED_IN_SYNC=0
    while [ $SECONDS -lt $end ]; do
        kill -0 $PRI_PID 2>/dev/null ||
            { cat "$TMPD/pri.err" >&2; fail "the primary exited"; }
        kill -0 $SEC_PID 2>/dev/null ||
            { cat "$TMPD/sec.err" >&2; fail "the secondary exited"; }
        read -r phase passes < <(status_get "$TMPD/pri.ctl" \
                                     sync_phase sync_passes || true) || true
        st=$(status_get "$TMPD/sec.ctl" state 2>/dev/null || true)
        [ "$st" = inconsistent ] && SAW_INCONSISTENT=1
        if [ "$phase" = initial-sync ]; then
            SAW_SYNC=1
            if [ -n "$stamplog" ]; then
                ACKED_IN_SYNC=$(grep -c '^A' "$stamplog" || true)
            fi
        fi
        if [ "$phase" = none ] && [ "${passes:-0}" != None ] &&
               [ "${passes:-0}" -ge 1 ]; then
            "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced \
                --timeout 120 || fail "wait-synced"
            # wait-synced may not know about the sync phase: the
            # phase must still be over.
            [ "$(status_field "$TMPD/pri.ctl" sync_phase)" = none ] ||
                fail "sync_phase is not none after wait-synced"
            return 0
        fi
        sleep 0.2
    done
    "$REPLICACTL" --control "$TMPD/pri.ctl" status >&2 || true
    "$REPLICACTL" --control "$TMPD/sec.ctl" status >&2 || true
    fail "the initial sync did not end within $secs s"
}
