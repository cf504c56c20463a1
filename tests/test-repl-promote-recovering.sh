#!/usr/bin/env bash
# promote is refused while a secondary replays its log at startup (state
# "recovering"), with or without --force: records it journaled before a
# crash are not on its disk yet, and a primary made of it would serve a
# disk that misses acknowledged writes and then have them applied under
# its clients' feet.  Once the replay is over, promote succeeds and the
# promoted volume holds every record the secondary had journaled.
#
# The secondary's disk writes are slowed (tests/faultinject.c, sleep=3 on
# pwrite of its volume): records are journaled but not applied when it
# is SIGKILLed, and at its restart each replayed record takes 3 s.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"

truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async replica-initial-sync=none
wait_field "$TMPD/pri.ctl" link replicating
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "not synced"

echo "EIO pwrite sleep=3" >"$TMPD/trigger"
# Four writes in flight at once: one batch to the secondary, whose
# first apply then sleeps while the batch is durable in its log.
nbdsh -u "$(pri_uri)" -c '
for i in range(4):
    h.aio_pwrite(bytes([ord("R") + i]) * 4096, i * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
' || fail "the writes"
last=$(status_field "$TMPD/pri.ctl" last_seq)
for _ in $(seq 1 100); do
    [ "$(status_field "$TMPD/sec.ctl" head_seq)" -ge "$last" ] && break
    sleep 0.1
done
head=$(status_field "$TMPD/sec.ctl" head_seq)
appl=$(status_field "$TMPD/sec.ctl" applied_seq)
[ "$head" -ge "$last" ] || fail "the secondary's log holds $head, not $last"
[ $((head - appl)) -ge 3 ] || fail "journaled $head, applied $appl already"
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
NBDKIT_PID=$PRI_PID
stop_nbdkit

# The restart: not start_secondary, which waits until nbdkit serves.
rm -f "$TMPD/sec.sock"
(
    export LD_PRELOAD="$NBDKIT_PRELOAD"
    exec nbdkit -f -U "$TMPD/sec.sock" --filter="$FILTER" --tls=require \
        --tls-psk="$TMPD/keys.psk" file "$TMPD/sec.img" \
        replica-role=secondary replica-log="$TMPD/sec.log" \
        replica-log-size=16M replica-control="$TMPD/sec.ctl"
) 2>>"$TMPD/sec.err" &
SEC_PID=$!
register_pid $SEC_PID
_errlogs[$SEC_PID]=$TMPD/sec.err
for _ in $(seq 1 100); do
    st=$(status_field "$TMPD/sec.ctl" state 2>/dev/null) && break
    sleep 0.1
done
[ "$st" = recovering ] || { cat "$TMPD/sec.err"; fail "state '$st'"; }

for force in "" --force; do
    rc=0
    "$REPLICACTL" --control "$TMPD/sec.ctl" promote $force \
        >"$TMPD/promote.out" 2>&1 || rc=$?
    [ $rc = 1 ] ||
        { cat "$TMPD/promote.out"; fail "promote $force: exit status $rc"; }
    grep -q "still being replayed" "$TMPD/promote.out" ||
        { cat "$TMPD/promote.out"; fail "promote $force: its message"; }
    [ "$(status_field "$TMPD/sec.ctl" state)" = recovering ] ||
        fail "promote $force was tried after the replay: test too slow"
done
[ "$(status_field "$TMPD/sec.ctl" role)" = secondary ] ||
    fail "a refused promote changed the role"

rm -f "$TMPD/trigger"
wait_field "$TMPD/sec.ctl" state waiting 30
"$REPLICACTL" --control "$TMPD/sec.ctl" promote || fail "promote after replay"
[ "$(status_field "$TMPD/sec.ctl" role)" = primary ] || fail "role"
sec_nbdsh -c '
for i in range(4):
    assert h.pread(4096, i * 4096) == bytes([ord("R") + i]) * 4096, i
' || fail "the promoted volume misses a journaled record"
NBDKIT_PID=$SEC_PID
stop_nbdkit
echo "$0: ok"
