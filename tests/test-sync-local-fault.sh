#!/usr/bin/env bash
# The primary fails locally in the middle of an initial sync, the link
# to the peer staying up.  Each case: a 256 MiB volume of random data,
# an empty secondary (every block is re-sent), fresh logs,
# replica-resync-rate=32M so that the pass lasts about 8 s; once the pass
# has re-sent 32 MiB, a fault is armed.
#  1. log: tests/faultinject.so fails one pwritev of the primary's log
#     (EIO, once): the append of the pass's next records fails.  The
#     filter counts it (log_errors) and starts its log afresh, which
#     ends the link; the reconnection starts a new pass.
#  2. read: nbdkit's error filter, under ours, fails every read of the
#     primary's volume (EIO) while a trigger file exists: the walk
#     cannot read its chunks.  Nothing ends the link, so the pass must
#     start again by itself: status says it failed and is retried
#     (sync_reason), and once the trigger file is gone the pass ends.
# Both end with the secondary byte-identical and consistent.  What this
# can catch: a pass stopped for good by a local error (the phase stuck
# at initial-sync and the secondary inconsistent until some reconnection
# that never comes), or records lost or applied out of order around the
# failed append.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires cmp --version
requires test -f "$(nbdkit --dump-config | sed -n 's/^filterdir=//p')/nbdkit-error-filter.so"
make_tmpdir
make_psk

SIZE=$((256 * 1048576))
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"
source "$SRCDIR/tests/sync-functions.sh"

head -c "$SIZE" /dev/urandom > "$TMPD/pri.img"

# start_pair [NBDKIT OPTION...] [-- KEY=VALUE...]: a fresh empty
# secondary, the relay, and the primary over fresh logs (with OPTIONs
# before the plugin, KEY=VALUEs after it).
start_pair ()
{
    local opts=() params=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    params=("$@")
    rm -f "$TMPD/sec.img" "$TMPD/sec.log" "$TMPD/pri.log"
    truncate -s "$SIZE" "$TMPD/sec.img"
    start_tcp_secondary "$TMPD/sec.img"
    start_relay "$TMPD/count.json"
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" "${opts[@]}" \
        file "$TMPD/pri.img" replica-log="$TMPD/pri.log" \
        replica-log-size=64M replica-control="$TMPD/pri.ctl" \
        replica-mode=sync replica-resync-rate=32M \
        replica-peer="nbds://replica@127.0.0.1:$RELAY_PORT/" \
        replica-tls-psk="$TMPD/keys.psk" "${params[@]}"
    PRI_PID=$NBDKIT_PID
    replicator_pid >/dev/null
}

# until_resent BYTES: wait until the initial sync has re-sent BYTES.
until_resent ()
{
    local i phase sent
    for i in $(seq 1 300); do
        read -r phase sent < <(status_get "$TMPD/pri.ctl" sync_phase \
                                   sync_sent_bytes || true) || true
        [ "$phase" = initial-sync ] && [ "$sent" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "the initial sync did not re-send $1 bytes (phase $phase)"
}

# end_pair LABEL: the sync ends, identical; then everything stops.
end_pair ()
{
    wait_initial_sync 120
    [ "$(status_field "$TMPD/sec.ctl" state)" != inconsistent ] ||
        fail "$1: the secondary is still inconsistent"
    cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
        fail "$1: the secondary's file differs from the primary's"
    echo "$0: $1: status: $(status_get "$TMPD/pri.ctl" sync_passes \
        log_errors)" "(passes, log errors)"
    stop_relay
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    NBDKIT_PID=$SEC_PID
    stop_nbdkit
}

# 1. A log write fails.  (The shim, aimed at the primary's log, goes
# into the nbdkits started from here on: the secondary's log is another
# file.)
saved_preload=${NBDKIT_PRELOAD:-}
use_fault_shim "$TMPD/pri.log"
start_pair
until_resent $((32 * 1048576))
echo "EIO once" > "$TMPD/trigger"
for i in $(seq 1 100); do
    [ -e "$TMPD/trigger" ] || break
    sleep 0.1
done
[ ! -e "$TMPD/trigger" ] || fail "log: no log write was failed within 10 s"
# (The shim removes the trigger inside the failing call; the filter
# counts the error once the call has returned.)
for i in $(seq 1 50); do
    [ "$(status_field "$TMPD/pri.ctl" log_errors)" -ge 1 ] && break
    sleep 0.1
done
[ "$(status_field "$TMPD/pri.ctl" log_errors)" -ge 1 ] ||
    fail "log: log_errors does not count the failed write"
end_pair log
export NBDKIT_PRELOAD=$saved_preload

# 2. Reading the volume fails for a while.
start_pair --filter=error -- error-pread=EIO error-pread-rate=1 \
    error-pread-file="$TMPD/readfault"
until_resent $((32 * 1048576))
touch "$TMPD/readfault"
reason=
for i in $(seq 1 150); do
    reason=$(status_field "$TMPD/pri.ctl" sync_reason)
    [[ $reason == *retried* ]] && break
    sleep 0.1
done
echo "$0: read: sync_reason: $reason"
[[ $reason == *retried* ]] ||
    fail "read: status does not say that the failed pass is retried"
# Failing still, a retry later.
sleep 6
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = initial-sync ] ||
    fail "read: the sync ended while the volume could not be read"
rm -f "$TMPD/readfault"
end_pair read
grep -q 'initial-sync pass failed.*runs again in' "$TMPD/pri.err" ||
    fail "read: nbdkit's log does not say that the pass runs again"
echo "$0: ok"
