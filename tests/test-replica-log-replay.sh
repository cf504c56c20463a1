#!/usr/bin/env bash
# replicactl log-replay refuses what it cannot do right: --all on a log
# that wrapped (the oldest history is gone), and an image whose size is
# not the volume's.  On a log that never wrapped it rebuilds the volume.
source "$SRCDIR/tests/functions.sh"
make_tmpdir
cd "$TMPD"

# A log that never wrapped: --all rebuilds the volume from a blank image.
truncate -s 32M disk.img
truncate -s 32M start.img
start_nbdkit sock err file disk.img replica-log="$TMPD/big.log" \
    replica-log-size=64M
head -c 4M /dev/urandom > data
nbdcopy --synchronous data "$(uri_of sock)"
stop_nbdkit
"$REPLICACTL" log-replay --all big.log start.img
cmp disk.img start.img || fail "log-replay --all did not rebuild the volume"

# Wrong image size: refused, the image untouched.
truncate -s 1M small.img
if "$REPLICACTL" log-replay --all big.log small.img 2>out; then
    fail "log-replay accepted an image of the wrong size"
fi
grep -q "belongs to a volume of 33554432 bytes" out || { cat out; fail "message"; }
[ "$(stat -c %s small.img)" = 1048576 ] || fail "small.img was resized"

# A log that wrapped: --all is refused.
truncate -s 32M disk2.img
start_nbdkit sock err file disk2.img replica-log="$TMPD/small.log" \
    replica-log-size=8M
head -c 32M /dev/urandom > data2
nbdcopy --synchronous data2 "$(uri_of sock)"
stop_nbdkit
truncate -s 32M blank.img
if "$REPLICACTL" log-replay --all small.log blank.img 2>out; then
    fail "log-replay --all accepted a wrapped log"
fi
grep -q "has wrapped" out || { cat out; fail "message"; }
echo "$0: OK"
