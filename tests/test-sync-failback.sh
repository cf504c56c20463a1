#!/usr/bin/env bash
# Failback.  A (primary) replicates to B in sync mode; a stamped storm;
# A dies (SIGKILL) and B is promoted: no acknowledged write lost.  B
# serves writes alone for a while.  A is demoted (replicactl demote)
# and started as B's secondary, B is restarted with A as its peer: a
# checksum resync sends only what diverged (A's unshipped tail and B's
# writes alone), while B takes a second stamped storm.  Then B dies in
# its turn, A is promoted back, and the stamped checker finds every
# write B acknowledged.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
BLOCKS=16384                    # 64 MiB volume
STAMP="/usr/bin/python3 $SRCDIR/tests/stamp.py"
truncate -s $((BLOCKS * 4096)) "$TMPD/a.img" "$TMPD/b.img"
a_uri () { echo "nbd+unix:///?socket=$TMPD/a.sock"; }
b_uri () { echo "nbd+unix:///?socket=$TMPD/b.sock"; }

# node NAME ROLE-ARGS...: start nbdkit for node a or b.
node ()
{
    local n=$1
    shift
    READY_URI="nbds+unix://replica@/?socket=$TMPD/$n.sock&tls-psk-file=$TMPD/keys.psk" \
    start_nbdkit "$TMPD/$n.sock" "$TMPD/$n.err" \
        --tls=on --tls-psk="$TMPD/keys.psk" \
        file "$TMPD/$n.img" replica-log="$TMPD/$n.log" \
        replica-log-size=64M replica-control="$TMPD/$n.ctl" "$@"
}
peer () { echo "nbds+unix://replica@/?socket=$TMPD/$1.sock"; }

# 1. A -> B, sync; A dies mid-storm; B is promoted.
node b replica-role=secondary
B=$NBDKIT_PID
node a replica-mode=sync replica-peer="$(peer b)" \
    replica-tls-psk="$TMPD/keys.psk"
A=$NBDKIT_PID
"$REPLICACTL" --control "$TMPD/a.ctl" wait-synced --timeout 60
$STAMP write "$(a_uri)" $BLOCKS "$TMPD/s1.log" --depth 16 \
    > "$TMPD/s1.out" 2>&1 &
w=$!
register_pid $w
sleep 1.5
replicator_pid "$TMPD/a.ctl" >/dev/null
kill -9 "$REPL_PID" $A
wait $A 2>/dev/null || true
wait $w || { cat "$TMPD/s1.out"; fail "the first storm failed"; }
acks=$(grep -c '^A' "$TMPD/s1.log" || true)
[ "$acks" -gt 100 ] || fail "the first storm had $acks writes acknowledged"
"$REPLICACTL" --control "$TMPD/b.ctl" promote || fail "promote B"
$STAMP check "$(b_uri)" $BLOCKS "$TMPD/s1.log" --mode sync ||
    fail "B lost writes A acknowledged"
# B alone takes writes.
nbdsh -u "$(b_uri)" -c '
import os
for i in range(64):
    h.pwrite(os.urandom(4096), i * 65536)'

# 2. Failback: A demoted, started as B's secondary; B restarted with A
#    as its peer.
"$REPLICACTL" demote "$TMPD/a.log" > /dev/null || fail "demote A"
node a
A=$NBDKIT_PID
[ "$(status_field "$TMPD/a.ctl" role)" = secondary ] || fail "A's role"
NBDKIT_PID=$B
stop_nbdkit
node b replica-mode=sync replica-peer="$(peer a)" \
    replica-tls-psk="$TMPD/keys.psk"
B=$NBDKIT_PID
$STAMP write "$(b_uri)" $BLOCKS "$TMPD/s2.log" --depth 16 --seconds 3 \
    > /dev/null 2>&1 &
w=$!
register_pid $w
"$REPLICACTL" --control "$TMPD/b.ctl" wait-synced --timeout 120 ||
    fail "failback resync did not end"
wait $w || fail "the second storm failed"
"$REPLICACTL" --control "$TMPD/b.ctl" wait-synced --timeout 60
sent=$(status_field "$TMPD/b.ctl" sync_sent_bytes)
echo "failback resync re-sent $sent bytes of $((BLOCKS * 4096))"
[ "$sent" -lt $((BLOCKS * 4096 / 4)) ] ||
    fail "the failback resync re-sent $sent bytes: more than what diverged"
nbdcopy "$(a_uri)" "$TMPD/a.copy"
nbdcopy "$(b_uri)" "$TMPD/b.copy"
cmp "$TMPD/a.copy" "$TMPD/b.copy" || fail "A differs from B after failback"

# 3. B dies mid-storm; A is promoted back: nothing B acknowledged lost.
#    (The volume is zeroed first, through B, so that the checker sees
#    only this storm's stamps.)
nbdsh -u "$(b_uri)" -c "h.zero($BLOCKS * 4096, 0)"
$STAMP write "$(b_uri)" $BLOCKS "$TMPD/s3.log" --depth 16 \
    > "$TMPD/s3.out" 2>&1 &
w=$!
register_pid $w
sleep 1.5
replicator_pid "$TMPD/b.ctl" >/dev/null
kill -9 "$REPL_PID" $B
wait $B 2>/dev/null || true
wait $w || { cat "$TMPD/s3.out"; fail "the third storm failed"; }
acks=$(grep -c '^A' "$TMPD/s3.log" || true)
[ "$acks" -gt 100 ] || fail "the third storm had $acks writes acknowledged"
"$REPLICACTL" --control "$TMPD/a.ctl" promote || fail "promote A back"
$STAMP check "$(a_uri)" $BLOCKS "$TMPD/s3.log" --mode sync ||
    fail "A lost writes B acknowledged"
echo "$0: ok"
