#!/usr/bin/env bash
# Sync mode when the peer cannot acknowledge:
#  1. policy degrade (default), replica-sync-timeout=1: with the
#     secondary frozen, a write is replied to after about 1 s; status
#     says degraded; the frozen secondary learns it is outdated; after
#     the primary dies, promote refuses it without --force.
#  2. degrade, the primary restarts (it still knows the peer is
#     outdated), then the secondary comes back: it catches up, is told
#     it is up to date, and the primary is no longer degraded.
#  3. policy wait: a write waits for as long as the secondary is away,
#     and completes when it is back.
#  4. policy wait, async: a write is replied to while the secondary is
#     frozen; after set-mode sync a flush covers it, so it waits for the
#     secondary too.
#  5. degrade (the secondary's log writes are slow: tests/faultinject.c),
#     the secondary records that it is outdated, then catches up while
#     its superblock writes are slow: wait-synced returns only once it
#     has recorded that it is up to date again (before that, a promote
#     there would need --force).
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk

fresh_pair ()
{
    rm -f "$TMPD"/*.log
    truncate -s 0 "$TMPD/pri.img" "$TMPD/sec.img"
    truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
    LOG_SIZE=16M start_secondary "$TMPD/sec.img"
    LOG_SIZE=16M start_primary "$TMPD/pri.img" sync "$@"
    wait_field "$TMPD/pri.ctl" link replicating
    # The new peer's initial sync must be over: a peer frozen in the
    # middle of it is "inconsistent", not merely outdated.
    "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
}

# timed_write OFFSET: seconds a 4 KiB write to the primary took.
timed_write ()
{
    nbdsh -u "$(pri_uri)" -c "
import time
t = time.monotonic()
h.pwrite(b'D' * 4096, $1)
print('%.2f' % (time.monotonic() - t))"
}

# 1.
fresh_pair replica-sync-timeout=1
timed_write 0 >/dev/null
kill -STOP "$SEC_PID"
t=$(timed_write 4096)
/usr/bin/python3 -c "import sys; sys.exit(not (0.9 <= $t < 5))" ||
    fail "a write to a primary with a frozen peer took $t s"
[ "$(status_field "$TMPD/pri.ctl" degraded)" = true ] || fail "not degraded"
[ "$(status_field "$TMPD/pri.ctl" peer_outdated)" = true ] ||
    fail "peer not outdated"
status_field "$TMPD/pri.ctl" link_error | grep -q "degraded" ||
    fail "link_error does not say degraded"
sleep 1                         # the OUTDATED message is on its way
replicator_pid >/dev/null
kill -9 "$REPL_PID" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true
kill -CONT "$SEC_PID"
wait_field "$TMPD/sec.ctl" outdated true
if "$REPLICACTL" --control "$TMPD/sec.ctl" promote 2>"$TMPD/err"; then
    fail "an outdated secondary was promoted without --force"
fi
grep -q "outdated" "$TMPD/err" || { cat "$TMPD/err"; fail "message"; }
"$REPLICACTL" --control "$TMPD/sec.ctl" promote --force
NBDKIT_PID=$SEC_PID
stop_nbdkit

# 2.
fresh_pair replica-sync-timeout=1
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
t=$(timed_write 8192)
/usr/bin/python3 -c "import sys; sys.exit(not (0.9 <= $t < 5))" ||
    fail "a write without a peer took $t s"
[ "$(status_field "$TMPD/pri.ctl" degraded)" = true ] || fail "not degraded"
# The primary restarts before it could tell the peer: it remembers.
replicator_pid >/dev/null
kill -9 "$REPL_PID" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true
LOG_SIZE=16M start_primary "$TMPD/pri.img" sync replica-sync-timeout=1
[ "$(status_field "$TMPD/pri.ctl" peer_outdated)" = true ] ||
    fail "a restart forgot that the peer is outdated"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" degraded false
wait_field "$TMPD/pri.ctl" peer_outdated false
wait_field "$TMPD/sec.ctl" outdated false
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
t=$(timed_write 12288)
/usr/bin/python3 -c "import sys; sys.exit(not ($t < 0.9))" ||
    fail "a write after recovery took $t s"
NBDKIT_PID=$PRI_PID
stop_nbdkit
NBDKIT_PID=$SEC_PID
stop_nbdkit

# 3.
fresh_pair replica-sync-timeout=1 replica-sync-policy=wait
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
timed_write 16384 > "$TMPD/t" &
w=$!
register_pid $w
sleep 3
kill -0 $w 2>/dev/null || fail "policy wait: the write completed without a peer"
[ "$(status_field "$TMPD/pri.ctl" degraded)" = false ] || fail "degraded"
if "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 1 \
       2>"$TMPD/err"; then
    fail "wait-synced succeeded without a peer"
fi
grep -q "timed out" "$TMPD/err" || { cat "$TMPD/err"; fail "message"; }
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait $w || fail "the waiting write failed"
sec_nbdsh -c 'assert h.pread(4096, 16384) == b"D" * 4096' ||
    fail "the write is not on the secondary"
stop_pair

# 4.
rm -f "$TMPD"/*.log
truncate -s 0 "$TMPD/pri.img" "$TMPD/sec.img"
truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async replica-sync-timeout=1 \
    replica-sync-policy=wait
wait_field "$TMPD/pri.ctl" link replicating
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
kill -STOP "$SEC_PID"
t=$(timed_write 20480)
/usr/bin/python3 -c "import sys; sys.exit(not ($t < 0.9))" ||
    fail "an async write took $t s"
"$REPLICACTL" --control "$TMPD/pri.ctl" set-mode sync >/dev/null
nbdsh -u "$(pri_uri)" -c 'h.flush()' &
f=$!
register_pid $f
sleep 3
kill -0 $f 2>/dev/null ||
    fail "a sync-mode flush returned while the secondary lacks a write it covers"
kill -CONT "$SEC_PID"
wait $f || fail "the flush failed"
sec_nbdsh -c 'assert h.pread(4096, 20480) == b"D" * 4096' ||
    fail "the flushed write is not on the secondary"
stop_pair

# 5. (last: the shim stays preloaded into every nbdkit started after it)
use_fault_shim "$TMPD/sec.log"
fresh_pair replica-sync-timeout=1
echo "EIO pwritev sleep=3" >"$TMPD/trigger"
timed_write 24576 >/dev/null
[ "$(status_field "$TMPD/pri.ctl" peer_outdated)" = true ] ||
    fail "peer not outdated"
wait_log_flag "$TMPD/sec.log" outdated
echo "EIO pwrite sleep=3" >"$TMPD/trigger"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "wait-synced after the secondary came back"
"$REPLICACTL" log-dump "$TMPD/sec.log" >"$TMPD/dump"
if grep -q "flags.*outdated" "$TMPD/dump"; then
    fail "wait-synced returned while the secondary still records outdated"
fi
[ "$(status_field "$TMPD/pri.ctl" peer_outdated)" = false ] ||
    fail "peer_outdated after wait-synced"
rm -f "$TMPD/trigger"
echo "$0: ok"
