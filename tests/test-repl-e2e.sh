#!/usr/bin/env bash
# End to end with real clients, sync mode over TLS (PSK): qemu-img
# convert of a real qcow2 image and fio random writes with verification
# into the primary; replicactl wait-synced; the secondary's volume is
# then byte-identical to the primary's.  The secondary refuses client
# writes, and status reports the link on both sides.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires qemu-img --version
requires qemu-io --version
requires fio --version
make_tmpdir
make_psk
truncate -s 256M "$TMPD/pri.img" "$TMPD/sec.img"

start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
wait_field "$TMPD/sec.ctl" link replicating
[ "$(status_field "$TMPD/pri.ctl" mode)" = sync ] || fail "mode"

# A real image: qcow2 with data, a hole and a zeroed range.
qemu-img create -q -f qcow2 "$TMPD/src.qcow2" 128M
qemu-io -f qcow2 -c "write -P 0xa5 0 3M" -c "write -P 0x3c 17M 5M" \
    -c "write -z 18M 1M" -c "write -P 0x77 127M 1M" "$TMPD/src.qcow2" \
    >/dev/null
qemu-img convert -n -f qcow2 -O raw "$TMPD/src.qcow2" "$(pri_uri)"

# fio: random 4K writes over the upper half, verified by reading back.
fio --name=verify --ioengine=nbd --uri="$(pri_uri)" --rw=randwrite \
    --bs=4k --offset=128M --size=64M --iodepth=16 --number_ios=8000 \
    --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --output="$TMPD/fio.out" || { cat "$TMPD/fio.out"; fail "fio"; }
grep -q "err= 0" "$TMPD/fio.out" || { cat "$TMPD/fio.out"; fail "fio errors"; }

"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "wait-synced"
last=$(status_field "$TMPD/pri.ctl" last_seq)
[ "$last" -gt 8000 ] || fail "only $last records"
[ "$(status_field "$TMPD/pri.ctl" acked_seq)" = "$last" ] || fail "acked_seq"
[ "$(status_field "$TMPD/pri.ctl" lag_entries)" = 0 ] || fail "lag_entries"
[ "$(status_field "$TMPD/pri.ctl" lag_bytes)" = 0 ] || fail "lag_bytes"
[ "$(status_field "$TMPD/sec.ctl" applied_seq)" = "$last" ] ||
    fail "secondary applied_seq"
same_volumes
sleep 1.2                       # the replicator reports counters each second
sent=$(status_field "$TMPD/pri.ctl" link_bytes_sent)
[ "$sent" -gt 32000000 ] || fail "link_bytes_sent is $sent"
# The converted image's half (fio wrote the other half):
nbdcopy "$(sec_uri)" "$TMPD/sec.raw"
truncate -s 128M "$TMPD/sec.raw"
qemu-img compare -q -f qcow2 -F raw "$TMPD/src.qcow2" "$TMPD/sec.raw" ||
    fail "the converted image did not reach the secondary intact"

# Clients of the secondary read, never write.
sec_nbdsh -c '
import errno
assert h.is_read_only()
try:
    h.pwrite(b"X" * 512, 0)
    assert False, "write accepted"
except nbd.Error as e:
    assert e.errnum in (errno.EPERM, errno.EROFS), e
' || fail "the secondary accepted a client write"

# Online mode change.
"$REPLICACTL" --control "$TMPD/pri.ctl" set-mode async >/dev/null
[ "$(status_field "$TMPD/pri.ctl" mode)" = async ] || fail "set-mode async"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"A" * 4096, 4096 * 3)'
"$REPLICACTL" --control "$TMPD/pri.ctl" set-mode sync >/dev/null
[ "$(status_field "$TMPD/pri.ctl" mode)" = sync ] || fail "set-mode sync"
if "$REPLICACTL" --control "$TMPD/pri.ctl" set-mode fast 2>/dev/null; then
    fail "set-mode fast accepted"
fi
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
echo "$0: ok"
