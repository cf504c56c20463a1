#!/usr/bin/env bash
# Standalone tracking: a primary that has replicated, restarted without
# its peer, tracks its writes in the dirty bitmap (surviving a SIGKILL
# and an orderly restart), so that when it is restarted with the peer
# again only the blocks written meanwhile are resynced, not the whole
# volume, with writes running throughout; the volumes end
# byte-identical.  A log that never replicated keeps no bitmap.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
size=256M
truncate -s $size "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M

# start_standalone LOG: the primary without replica-peer.
start_standalone ()
{
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
        file "$TMPD/pri.img" replica-log="$1" replica-log-size=$LOG_SIZE \
        replica-control="$TMPD/pri.ctl"
    PRI_PID=$NBDKIT_PID
}
stop_primary ()
{
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
}
# write_standalone BYTES: the writer until BYTES more are written.
write_standalone ()
{
    local i
    rm -f "$TMPD/written"
    start_writer
    for i in $(seq 1 600); do
        [ "$(written)" -ge "$1" ] && break
        kill -0 $WRITER_PID 2>/dev/null || fail "the writer died"
        sleep 0.1
    done
    [ "$(written)" -ge "$1" ] || fail "standalone writes stalled"
}

# A never-replicated log: no tracking (nothing to track for).
start_standalone "$TMPD/other.log"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = off ] ||
    fail "a never-replicated primary tracks writes"
stop_primary

# A replicated pair, in sync.
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"\x5a" * 1048576, 200 << 20)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
stop_primary

# Standalone: 2 x 32 MiB of writes (the log holds 16 MiB), the first
# run ended by SIGKILL in the middle of its writes.
start_standalone "$TMPD/pri.log"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "the standalone primary does not track its writes"
[ "$(status_field "$TMPD/pri.ctl" link)" = standalone ] ||
    fail "link is not standalone"
write_standalone $((32 << 20))
kill -9 $PRI_PID
wait $PRI_PID 2>/dev/null || true
wait $WRITER_PID 2>/dev/null || true        # its server died under it
start_standalone "$TMPD/pri.log"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "the bitmap was lost by a SIGKILL"
write_standalone $((32 << 20))
stop_writer
dirty=$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)
[ "$dirty" -gt 0 ] && [ "$dirty" -le $((64 << 20)) ] ||
    fail "$dirty dirty bytes, expected some of the first 64 MiB"
stop_primary
# The peer's copy lags: the standalone writes must reach it.
cmp -s "$TMPD/pri.img" "$TMPD/sec.img" &&
    fail "the standalone writes reached the secondary already?"

# The peer again, writes running: a resync of the bitmap's blocks only.
start_primary "$TMPD/pri.img" async
start_writer
wait_field "$TMPD/pri.ctl" sync_passes 1 120
total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
[ "$total" -le $((64 << 20)) ] ||
    fail "the resync covered $total bytes, not only the bitmap's"
grep -q 'resync of the peer starts: .*dirty bitmap' "$TMPD/pri.err" ||
    fail "the resync was not from the bitmap: $(grep 'resync of' \
        "$TMPD/pri.err")"
stop_writer
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = off ] ||
    fail "the bitmap was not cleared after the resync"
same_volumes

# The flag survives: standalone again tracks, and the orderly restart
# with the peer streams.
stop_primary
start_standalone "$TMPD/pri.log"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "a second standalone run does not track"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"\xa5" * 65536, 100 << 20)'
stop_primary
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
[ "$total" -le $((16 << 20)) ] ||
    fail "one 64 KiB write made a resync of $total bytes"
same_volumes

# A build from before standalone tracking, run without a peer, would
# have freed records unmarked; its superblock writes drop the bitmap's
# witness.  Without it the bitmap vouches for no peer behind the log:
# a full comparison, not a bitmap pass.
stop_primary
start_standalone "$TMPD/pri.log"
write_standalone $((32 << 20))
stop_writer
stop_primary
/usr/bin/python3 - "$TMPD/pri.log" <<'PY' || fail "cannot edit the superblock"
import os, struct, sys
sys.path.insert(0, os.environ["SRCDIR"] + "/tests")
from crc32c import crc32c
with open(sys.argv[1], "r+b") as f:
    for slot in (0, 4096):
        f.seek(slot)
        b = bytearray(f.read(256))
        if b[:7] != b"NBDRLOG" or struct.unpack_from("<I", b, 252)[0] != crc32c(b[:252]):
            continue
        assert struct.unpack_from("<Q", b, 200)[0] != 0, "no witness set"
        struct.pack_into("<Q", b, 200, 0)
        struct.pack_into("<I", b, 252, crc32c(b[:252]))
        f.seek(slot)
        f.write(b)
PY
start_primary "$TMPD/pri.img" async
wait_field "$TMPD/pri.ctl" sync_passes 1 120
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
[ "$total" -eq $((256 << 20)) ] ||
    fail "without the witness the resync covered $total bytes, not the volume"
same_volumes
echo "$0: ok"
