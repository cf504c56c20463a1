#!/usr/bin/env bash
# Replication survives its parts dying, in sync mode, under a stamped
# write storm: the replicator SIGKILLed (the filter restarts it), the
# secondary's nbdkit SIGKILLed and restarted, then both at once.  Each
# time replication resumes where it stopped; at the end the volumes are
# byte-identical, and the promoted secondary holds every acknowledged
# write (tests/stamp.py).  Last, an orderly stop of the secondary while
# the link is up and idle ends within 3 s (an nbdkit serving TLS waits
# for its idle client's next request: the replicator's heartbeat).
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
BLOCKS=16384
truncate -s $((BLOCKS * 4096)) "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=32M start_secondary "$TMPD/sec.img"
LOG_SIZE=32M start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating

$STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 8 --seconds 14 --strict 1 \
    > "$TMPD/stamp.out" 2>&1 &
writer=$!
register_pid $writer

# wait_new_replicator OLDPID: the filter started another one, linked.
wait_new_replicator ()
{
    local i p
    for i in $(seq 1 100); do
        p=$(status_field "$TMPD/pri.ctl" replicator_pid)
        if [ "$p" != 0 ] && [ "$p" != "$1" ]; then
            register_pid "$p"
            return 0
        fi
        sleep 0.1
    done
    fail "the filter did not restart the replicator"
}

sleep 1.5
replicator_pid >/dev/null
old=$REPL_PID
kill -9 "$old"
wait_new_replicator "$old"
wait_field "$TMPD/pri.ctl" link replicating

sleep 1.5
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
sleep 1
LOG_SIZE=32M start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" link replicating

sleep 1.5
replicator_pid >/dev/null
old=$REPL_PID
kill -9 "$old" "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
LOG_SIZE=32M start_secondary "$TMPD/sec.img"
wait_new_replicator "$old"
wait_field "$TMPD/pri.ctl" link replicating

wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
acks=$(grep -c '^A' "$TMPD/stamp.log" || true)
[ "$acks" -gt 1000 ] || fail "only $acks writes acknowledged"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "wait-synced"
[ "$(status_field "$TMPD/pri.ctl" handshakes)" -ge 4 ] || fail "handshakes"
[ "$(status_field "$TMPD/pri.ctl" degraded)" = false ] || fail "degraded"
same_volumes

NBDKIT_PID=$PRI_PID
stop_nbdkit
"$REPLICACTL" --control "$TMPD/sec.ctl" promote
$STAMP check "$(sec_uri)" $BLOCKS "$TMPD/stamp.log" --mode sync ||
    fail "the secondary lost acknowledged writes"
NBDKIT_PID=$SEC_PID
stop_nbdkit

rm -f "$TMPD"/*.log "$TMPD"/*.img
truncate -s 16M "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" sync
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
sleep 3                         # idle
kill -TERM $SEC_PID
for i in $(seq 1 30); do
    kill -0 $SEC_PID 2>/dev/null || break
    sleep 0.1
done
kill -0 $SEC_PID 2>/dev/null &&
    fail "the secondary did not stop on SIGTERM within 3 s, link idle"
wait $SEC_PID 2>/dev/null || true
NBDKIT_PID=$PRI_PID
stop_nbdkit
echo "$0: ok"
