#!/usr/bin/env bash
# A promote that takes seconds does not hold the control socket: status
# is answered meanwhile (a monitor asking during a failover used to
# time out) and says "promoting"; a second promote waits its turn and
# gets its own answer; nbdkit stopped during a promote waits for it.
# Here the slow part is the volume flush of a promote --force in the
# middle of an initial sync (the disk is inconsistent, so the
# checkpoint before the role change flushes it), on a disk whose flush
# takes 3 s (tests/faultinject.so); on a real one, much dirty data, or
# the batches queued before the promote, take that long.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"
head -c $((32 * 1024 * 1024)) /dev/urandom >"$TMPD/pri.img"

# A secondary in the middle of a slow initial sync, its primary gone.
midsync_secondary ()
{
    rm -f "$TMPD/sec.img" "$TMPD/sec.log" "$TMPD/pri.log" "$TMPD/trigger"
    truncate -s 32M "$TMPD/sec.img"
    LOG_SIZE=16M start_secondary "$TMPD/sec.img"
    LOG_SIZE=16M start_primary "$TMPD/pri.img" async replica-resync-rate=1M
    wait_field "$TMPD/sec.ctl" state inconsistent 20
    replicator_pid >/dev/null
    kill -9 "$REPL_PID" "$PRI_PID"
    wait "$PRI_PID" 2>/dev/null || true
    # The secondary's volume flushes take 3 s from now on.
    echo "EIO fdatasync sleep=3" >"$TMPD/trigger"
}

# promote --force in the background (PROMOTE: its PID), once under way.
start_promote ()
{
    "$REPLICACTL" --control "$TMPD/sec.ctl" promote --force \
        >"$TMPD/promote.out" 2>&1 &
    PROMOTE=$!
    register_pid $PROMOTE
    wait_field "$TMPD/sec.ctl" promoting true 10
}

# 1. Status during the promote, and a second promote.
midsync_secondary
start_promote
promote=$PROMOTE
"$REPLICACTL" --control "$TMPD/sec.ctl" promote --force \
    >"$TMPD/second.out" 2>&1 &
second=$!
register_pid $second
# Every answer quick, and some while the first was under way.
during=0
while kill -0 $promote 2>/dev/null; do
    t0=$(date +%s%N)
    "$REPLICACTL" --control "$TMPD/sec.ctl" status --json >"$TMPD/st" ||
        fail "status failed"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ $ms -lt 1500 ] ||
        fail "status took $ms ms while a promote flushed the volume"
    read -r role promoting < <(/usr/bin/python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); print(d["role"], d["promoting"])' "$TMPD/st")
    # (The role may turn primary just before the client has its answer.)
    [ "$promoting" = True ] || [ "$role" = primary ] ||
        fail "role $role, promoting $promoting, before the promote answered"
    kill -0 $promote 2>/dev/null && during=$((during + 1))
    sleep 0.1
done
wait $promote || { cat "$TMPD/promote.out"; fail "the promote failed"; }
echo "status answered $during times during the promote"
[ $during -ge 3 ] || fail "only $during status answers during the promote"
# The second waited its turn: the node was the primary by then.
if wait $second; then
    cat "$TMPD/second.out"
    fail "the second promote succeeded too"
fi
grep -q "already the primary" "$TMPD/second.out" ||
    { cat "$TMPD/second.out"; fail "the second promote's answer"; }
[ "$(status_field "$TMPD/sec.ctl" promoting)" = false ] ||
    fail "still promoting after every promote answered"
[ "$(status_field "$TMPD/sec.ctl" role)" = primary ] || fail "not promoted"
NBDKIT_PID=$SEC_PID stop_nbdkit

# 2. nbdkit stopped (SIGTERM) during a promote waits for it: the client
# gets its answer, and the log records the primary.
midsync_secondary
start_promote
promote=$PROMOTE
kill -TERM "$SEC_PID"
wait "$SEC_PID" || fail "nbdkit stopped during a promote exited $?"
wait $promote || { cat "$TMPD/promote.out"; fail "the promote's answer"; }
rm -f "$TMPD/trigger"
grep -q "now the primary" "$TMPD/promote.out" ||
    { cat "$TMPD/promote.out"; fail "the promote's answer"; }
"$REPLICACTL" log-dump "$TMPD/sec.log" >"$TMPD/dump" ||
    fail "log-dump failed"
grep -Eq '^role +primary$' "$TMPD/dump" ||
    { head "$TMPD/dump"; fail "the promote answered, but the log says"; }
echo PASS
