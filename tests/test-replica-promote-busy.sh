#!/usr/bin/env bash
# A promote that takes seconds does not hold the control socket: status
# is answered meanwhile (a monitor asking during a failover used to
# time out), a second promote is refused as under way, and the first
# one completes.  Here the slow part is the volume flush of a promote
# --force in the middle of an initial sync (the disk is inconsistent, so
# the checkpoint before the role change flushes it), on a disk whose
# flush takes 3 s (tests/faultinject.so); on a real one, much dirty
# data, or the batches queued before the promote, take that long.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"
head -c $((32 * 1024 * 1024)) /dev/urandom >"$TMPD/pri.img"
truncate -s 32M "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
# A slow initial sync, caught in its middle.
LOG_SIZE=16M start_primary "$TMPD/pri.img" async replica-resync-rate=1M
wait_field "$TMPD/sec.ctl" state inconsistent 20 ||
    fail "the secondary's initial sync did not begin"
replicator_pid >/dev/null
kill -9 "$REPL_PID" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true

# The secondary's volume flushes take 3 s from now on.
echo "EIO fdatasync sleep=3" >"$TMPD/trigger"
"$REPLICACTL" --control "$TMPD/sec.ctl" promote --force \
    >"$TMPD/promote.out" 2>&1 &
promote=$!
register_pid $promote

# Ask for the status until the promote is done: every answer quick,
# and some while it was under way.
during=0 second=
while kill -0 $promote 2>/dev/null; do
    t0=$(date +%s%N)
    role=$(status_field "$TMPD/sec.ctl" role) || fail "status failed"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ $ms -lt 1500 ] ||
        fail "status took $ms ms while a promote flushed the volume"
    if kill -0 $promote 2>/dev/null; then
        [ "$role" = secondary ] ||
            fail "role '$role' before the promote answered"
        during=$((during + 1))
        if [ -z "$second" ]; then
            second=$("$REPLICACTL" --control "$TMPD/sec.ctl" promote \
                         --force 2>&1) &&
                fail "a second promote succeeded during the first: $second"
            [ -n "$second" ] || second="(no message)"
        fi
    fi
    sleep 0.1
done
wait $promote || { cat "$TMPD/promote.out"; fail "the promote failed"; }
rm -f "$TMPD/trigger"
echo "status answered $during times during the promote; second: $second"
[ $during -ge 3 ] || fail "only $during status answers during the promote"
case $second in
    *"already under way"*) ;;
    *) fail "the second promote: '$second'" ;;
esac
[ "$(status_field "$TMPD/sec.ctl" role)" = primary ] || fail "not promoted"
NBDKIT_PID=$SEC_PID stop_nbdkit
echo PASS
