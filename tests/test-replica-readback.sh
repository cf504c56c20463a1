#!/usr/bin/env bash
# nbd-replica: data written through the filter by standard NBD clients
# (qemu-io, nbdcopy, qemu-img convert) reads back through the filter and
# lands unchanged on the backing file.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
requires qemu-io --version
requires qemu-img --version
requires nbdcopy --version
make_tmpdir

size=$((64 * 1024 * 1024))
truncate -s $size "$TMPD/disk.img"
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=32M
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"

# --- qemu-io: patterned writes, then read -P verifies the pattern.
qemu-io -f raw \
    -c 'write -P 0xa5 0 1M' \
    -c 'write -P 0x3c 5000 70000' \
    -c 'write -P 0x77 63M 1M' \
    "$uri" > "$TMPD/qio.out" 2>&1 || { cat "$TMPD/qio.out"; fail "qemu-io write"; }
qemu-io -f raw \
    -c 'read -P 0xa5 0 5000' \
    -c 'read -P 0x3c 5000 70000' \
    -c 'read -P 0xa5 75000 973576' \
    -c 'read -P 0x77 63M 1M' \
    -c 'read -P 0 1M 1M' \
    "$uri" > "$TMPD/qio.out" 2>&1 || { cat "$TMPD/qio.out"; fail "qemu-io read"; }
if grep -qi 'fail\|error' "$TMPD/qio.out"; then
    cat "$TMPD/qio.out"
    fail "qemu-io pattern verification"
fi

# --- nbdcopy: 16M of random data into the whole export start, read back.
head -c $((16 * 1024 * 1024)) /dev/urandom > "$TMPD/rand.bin"
nbdcopy "$TMPD/rand.bin" "$uri"
nbdcopy "$uri" "$TMPD/back.bin"
[ "$(stat -c %s "$TMPD/back.bin")" = $size ] || fail "nbdcopy read size"
cmp -n $((16 * 1024 * 1024)) "$TMPD/rand.bin" "$TMPD/back.bin" ||
    fail "nbdcopy: data read back differs"
# The rest is what qemu-io left there.
cmp -i $((63 * 1024 * 1024)):0 -n $((1024 * 1024)) "$TMPD/back.bin" \
    <(head -c $((1024 * 1024)) /dev/zero | tr '\0' '\167') ||
    fail "nbdcopy: qemu-io data at 63M is gone"

# --- qemu-img convert of a generated qcow2 (data, zero clusters and
# unallocated holes) into the export; -n: the export exists, so
# qemu-img writes zeroes over the holes (zero requests).
qemu-img create -q -f qcow2 "$TMPD/src.qcow2" $size
qemu-io -f qcow2 \
    -c 'write -P 0x11 0 2M' \
    -c 'write -P 0x22 3M 512k' \
    -c 'write -z 4M 1M' \
    -c 'write -P 0x33 10000000 123456' \
    -c 'write -P 0x44 60M 4M' \
    "$TMPD/src.qcow2" > /dev/null
qemu-img convert -n -f qcow2 -O raw "$TMPD/src.qcow2" "$uri"
qemu-img compare -f qcow2 -F raw "$TMPD/src.qcow2" "$uri" ||
    fail "qemu-img compare with the export differs"

appended=$(status_field "$ctl" records_appended)
[ "$appended" -ge 8 ] || fail "only $appended records appended"
[ "$(status_field "$ctl" log_errors)" = 0 ] || fail "log errors"
[ "$(status_field "$ctl" state)" = standalone ] || fail "state"

stop_nbdkit
# The backing file itself holds the image.
qemu-img compare -q -f qcow2 -F raw "$TMPD/src.qcow2" "$TMPD/disk.img" ||
    fail "backing file differs from the converted image"
qemu-img convert -f qcow2 -O raw "$TMPD/src.qcow2" "$TMPD/src.raw"
cmp "$TMPD/src.raw" "$TMPD/disk.img" || fail "backing file differs (cmp)"
echo "$0: OK"
