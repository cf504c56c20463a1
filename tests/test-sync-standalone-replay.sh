#!/usr/bin/env bash
# The first standalone start of a replicated primary whose previous run
# stopped uncleanly (records after the checkpoint, the peer away) marks
# in its dirty bitmap the blocks of the records it replays, not the
# whole volume (design 21.7: the peer's return then resyncs what was
# written, not everything).  It marked all 256 MiB for 1 MiB written:
# bitmap_cover started from the acked point, whose lsn recovery had
# moved to the log's end.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
size=256M
truncate -s $size "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M

start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
# The peer goes away: the checkpoint stays at its acked point, the
# records stay in the log.
kill -9 $SEC_PID; wait $SEC_PID 2>/dev/null || true
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"\x5a" * 1048576, 10 << 20)'
replicator_pid >/dev/null
rp=$REPL_PID
kill -9 $PRI_PID $rp; wait $PRI_PID 2>/dev/null || true

start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
    file "$TMPD/pri.img" replica-log="$TMPD/pri.log" replica-log-size=$LOG_SIZE \
    replica-control="$TMPD/pri.ctl"
PRI_PID=$NBDKIT_PID
st=$(status_field "$TMPD/pri.ctl" bitmap)
dirty=$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)
echo "bitmap=$st dirty=$dirty"
grep 'dirty bitmap' "$TMPD/pri.err" || true
[ "$dirty" -le $((2 << 20)) ] ||
    fail "standalone start after an unclean stop marks $dirty bytes (1 MiB written)"
[ "$dirty" -ge $((1 << 20)) ] ||
    fail "the replayed 1 MiB is not marked ($dirty bytes)"
stop_nbdkit
echo "$0: ok"
