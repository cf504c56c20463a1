#!/usr/bin/env bash
# A peer whose resync from the dirty bitmap was interrupted comes back
# demoted: meanwhile it was promoted (the primary could not reach it),
# wrote on its own far from the bitmap's chunks, and was demoted.  The
# primary, which still means to resume its bitmap pass, must compare
# the whole disk (demote marks the log FOREIGN, its HELLO says so): a
# bitmap pass would never look where the peer wrote, and wait-synced
# would report a pair whose volumes differ.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
size=256M
truncate -s $size "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M

start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async replica-resync-rate=4M
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"

# Outage: the bitmap takes over.
kill -9 $SEC_PID; wait $SEC_PID 2>/dev/null || true
rm -f "$TMPD/written"
start_writer
for i in $(seq 1 600); do
    [ "$(written)" -ge $((24 << 20)) ] && break
    sleep 0.1
done
stop_writer
wait_field "$TMPD/pri.ctl" bitmap tracking
# The peer is back; its bitmap pass (slow: resync-rate 4M) is cut.
start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" sync_phase resync
sleep 2
kill -9 $SEC_PID; wait $SEC_PID 2>/dev/null || true
[ "$(status_field "$TMPD/pri.ctl" bitmap)" != off ] ||
    fail "the bitmap pass ended before the cut: the test proves nothing"

# The peer, unreachable by the primary (another socket), is promoted,
# writes on its own far from the bitmap's chunks, stops, is demoted.
start_nbdkit "$TMPD/b2.sock" "$TMPD/b2.err" --tls=on --tls-psk="$TMPD/keys.psk" \
    file "$TMPD/sec.img" replica-log="$TMPD/sec.log" \
    replica-log-size=$LOG_SIZE replica-control="$TMPD/b2.ctl"
B2=$NBDKIT_PID
"$REPLICACTL" --control "$TMPD/b2.ctl" promote --force || fail "promote --force"
nbdsh -u "nbd+unix:///?socket=$TMPD/b2.sock" \
    -c 'h.pwrite(b"\x77" * 1048576, 200 << 20)'
NBDKIT_PID=$B2
stop_nbdkit
"$REPLICACTL" demote "$TMPD/sec.log" >/dev/null || fail "demote"

# Back as the primary's secondary.
passes=$(status_field "$TMPD/pri.ctl" sync_passes)
start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" sync_passes $((passes + 1)) 180
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120 ||
    fail "not synced after the resync"
grep 'resync of the peer starts' "$TMPD/pri.err" | tail -1
echo "pass total $(status_field "$TMPD/pri.ctl" sync_total_bytes) bytes"
same_volumes
stop_pair
echo "$0: ok"
