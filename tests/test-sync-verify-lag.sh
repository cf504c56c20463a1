#!/usr/bin/env bash
# An async client's write never waits for a lagging peer, even to a
# block a verify is confirming: the verify waits for the peer to catch
# up before it locks the block (docs/design.md 21.5).  The secondary's
# next disk write sleeps 10 s (tests/faultinject.c), so the peer lags
# while the verify confirms a block corrupted behind its back; a client
# write to that very block must complete at once, not after the lag.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"
# -D replica.sync=1: the verify says which block it is confirming.
PRI_NBDKIT_OPTS="-v -D replica.sync=1" start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
# Block 10 differs, behind the secondary's back.
dd if=/dev/urandom of="$TMPD/sec.img" bs=4096 seek=10 count=1 conv=notrunc \
   status=none
echo "EIO pwrite sleep=10 once" >"$TMPD/trigger"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"x" * 4096, 2000 * 4096)' ||
    fail "the write the peer lags on"
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 120 \
    >"$TMPD/verify.out" 2>&1 &
vpid=$!
register_pid $vpid
wait_field "$TMPD/pri.ctl" verify_state running 10
for _ in $(seq 1 200); do
    grep -q "verify: confirming the block at 40960\$" "$TMPD/pri.err" && break
    sleep 0.1
done
grep -q "verify: confirming the block at 40960\$" "$TMPD/pri.err" ||
    fail "the verify never got to confirm block 10"
[ -f "$TMPD/trigger" ] && fail "the secondary did not lag"
t0=$(date +%s%N)
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"z" * 4096, 10 * 4096)' ||
    fail "the write to block 10"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "async write to the block being confirmed: $ms ms"
[ $ms -lt 5000 ] ||
    fail "an async write waited $ms ms for a lagging peer (verify lock)"
[ "$(status_field "$TMPD/pri.ctl" lag_entries)" -gt 0 ] ||
    fail "the peer caught up before the write: the test proves nothing"
rc=0
wait $vpid || rc=$?
cat "$TMPD/verify.out"
[ $rc = 0 ] || [ $rc = 1 ] || fail "verify exit status $rc"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced at the end"
same_volumes
stop_pair
echo "$0: ok"
