#!/usr/bin/env bash
# nbd-replica: the plugin's flush fails at a checkpoint.
#
# tests/faultinject.c fails fdatasync on the backing file (the file
# plugin's flush).  Linux may drop the pages of a failed writeback and
# report success on the next fsync, so the checkpoint must neither move
# nor be retried past the records: the volume fails (docs/design.md
# "States": state "failed", fault set, all I/O returns EIO) with the
# acknowledged writes still after the checkpoint in the log, and the
# next start replays them (checked on a backing file that lost them, as
# after a failed writeback).
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

use_fault_shim "$TMPD/disk.img"

truncate -s 64M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
}
start
nbdsh -u "$uri" -c 'h.pwrite(b"0" * 4096, 0)'
# Let a checkpoint pass that first write (healthy flush).
for _ in $(seq 1 50); do
    [ "$(status_field "$ctl" checkpoint_seq)" -ge 1 ] && break
    sleep 0.1
done
ckpt=$(status_field "$ctl" checkpoint_seq)
[ "$ckpt" -ge 1 ] || fail "no checkpoint within 5 s"

echo "EIO fdatasync" > "$TMPD/trigger"
nbdsh -u "$uri" -c '
h.pwrite(b"A" * 65536, 1 << 20)
h.pwrite(b"B" * 4096, 2 << 20)
' || fail "writes before the checkpoint were not acknowledged"
for _ in $(seq 1 50); do
    [ "$(status_field "$ctl" state)" = failed ] && break
    sleep 0.1
done
state=$(status_field "$ctl" state)
fault=$(status_field "$ctl" fault)
echo "state $state; fault: $fault"
[ "$state" = failed ] || fail "the volume did not fail within 5 s of a failed checkpoint flush"
[ "$fault" != null ] || fail "no fault"
[ "$(status_field "$ctl" checkpoint_seq)" = "$ckpt" ] ||
    fail "the checkpoint moved past records whose flush failed"
nbdsh -u "$uri" -c '
import errno
for what, f in (("read", lambda: h.pread(512, 0)),
                ("write", lambda: h.pwrite(b"C" * 512, 3 << 20))):
    try:
        f()
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "%s: %s" % (what, e)
    else:
        raise AssertionError("%s succeeded on a failed volume" % what)
' || fail "I/O on the failed volume"

rm "$TMPD/trigger"
kill_nbdkit_hard
"$REPLICACTL" log-dump "$TMPD/log" > "$TMPD/dump.txt"
tail -1 "$TMPD/dump.txt"
awk '$4 == "write" && $5 == 1048576' "$TMPD/dump.txt" | grep -q . ||
    fail "the write at 1M is not after the checkpoint in the log"
# What a failed writeback may have done: the pages of the writes after
# the checkpoint never reached the disk.  Replay must bring them back.
dd if=/dev/zero of="$TMPD/disk.img" bs=64K seek=16 count=1 conv=notrunc status=none
dd if=/dev/zero of="$TMPD/disk.img" bs=4K seek=512 count=1 conv=notrunc status=none
start
[ "$(status_field "$ctl" replayed_records)" -ge 2 ] || fail "nothing replayed"
nbdsh -u "$uri" -c '
assert h.pread(65536, 1 << 20) == b"A" * 65536
assert h.pread(4096, 2 << 20) == b"B" * 4096
assert h.pread(512, 3 << 20) == bytes(512), "a write refused on the failed volume was applied"
' || fail "data after restart"
stop_nbdkit
if grep -E 'Sanitizer|runtime error' "$TMPD/nbdkit.err"; then
    fail "sanitizer report in nbdkit's output"
fi
echo "$0: OK"
