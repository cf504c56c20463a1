#!/usr/bin/env bash
# nbd-replica: trim and zero are journaled and read as zeroes.
#
# After writing data and then trimming (and zeroing) ranges, aligned and
# not, the ranges read as zeroes through the filter and on the backing;
# replaying the whole log (log-replay --all) onto the starting image
# gives a byte-identical copy of the backing.  A trim is a hint in NBD,
# but the filter applies it as a zero that may deallocate, so that every
# copy that replays the log reads the same bytes.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

size=$((16 * 1024 * 1024))
head -c $size /dev/urandom > "$TMPD/start.img"
cp "$TMPD/start.img" "$TMPD/disk.img"
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=64M
uri=$(uri_of "$TMPD/sock")

TMPD=$TMPD nbdsh -u "$uri" -c '
import os
size = h.get_size()
assert h.can_trim(), "trim not offered"
assert h.can_zero(), "zero not offered"
data = os.urandom(4 << 20)
h.pwrite(data, 1 << 20)
img = bytearray(open(os.environ["TMPD"] + "/start.img", "rb").read())
img[1 << 20:5 << 20] = data
# (offset, length, op): aligned, unaligned, inside one block, a range
# crossing data written and data of the starting image, and a range
# rewritten after its trim.
ops = [(2 << 20, 1 << 20, "trim"),
       (1 << 20 | 12345, 100003, "trim"),
       (3 << 20 | 100, 1000, "trim"),
       (4 << 20 | 4096, 3 << 20, "trim"),
       (9 << 20 | 777, 200000, "zero"),
       (10 << 20, 1 << 20, "zero-may-trim"),
       (12 << 20 | 1, 4095, "trim")]
for off, n, op in ops:
    if op == "trim":
        h.trim(n, off)
    elif op == "zero":
        h.zero(n, off, nbd.CMD_FLAG_NO_HOLE)
    else:
        h.zero(n, off)
    img[off:off + n] = bytes(n)
    assert h.pread(n, off) == bytes(n), "%s of %d at %d does not read as zero" % (op, n, off)
again = os.urandom(8192)
h.pwrite(again, 2 << 20 | 4096)
img[(2 << 20 | 4096):(2 << 20 | 4096) + 8192] = again
h.flush()
back = h.pread(size, 0)
assert back == bytes(img), "the export differs from the expected image"
open(os.environ["TMPD"] + "/expected.img", "wb").write(img)
' || fail "trim/zero through the filter"

[ "$(status_field "$TMPD/log.ctl" log_errors)" = 0 ] || fail "log errors"
stop_nbdkit
cmp "$TMPD/expected.img" "$TMPD/disk.img" || fail "the backing differs"

"$REPLICACTL" log-dump --all "$TMPD/log" > "$TMPD/dump.txt"
ntrim=$(awk '$4 == "trim"' "$TMPD/dump.txt" | wc -l)
nzero=$(awk '$4 == "zero"' "$TMPD/dump.txt" | wc -l)
[ "$ntrim" = 5 ] && [ "$nzero" = 2 ] ||
    fail "the log holds $ntrim trim and $nzero zero records, expected 5 and 2"
cp "$TMPD/start.img" "$TMPD/copy.img"
"$REPLICACTL" log-replay --all "$TMPD/log" "$TMPD/copy.img"
cmp "$TMPD/copy.img" "$TMPD/disk.img" ||
    fail "log-replay --all onto the starting image differs from the backing"
echo "$0: OK"
