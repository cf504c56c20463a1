#!/usr/bin/env bash
# replicactl log-replay refuses what it cannot do right, before it writes
# anything: --all on a log that wrapped (the oldest history is gone) or
# whose history a restart cut at a torn record, and an image whose size
# is not the volume's.  On a log that never wrapped it rebuilds the
# volume.
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

# A restart that cut the log at a torn record inside a batch starts the
# new records at the next block: a scan from the start stops at the torn
# record, short of the checkpoint, so --all refuses, applying nothing.
# (A 2 MiB write is two records in one batch; nbdkit is killed before
# the checkpointer, every second, passes them; retried if it did.)
cat > writer.py <<'PYEOF'
import nbd, os, signal, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(os.urandom(2 << 20), 0)
os.kill(int(sys.argv[2]), signal.SIGKILL)
PYEOF
records () {
    "$REPLICACTL" log-dump torn.log > dump
    awk '/^records after the checkpoint:/ { on = 1; getline; next }
         on && NF == 8 { print $1, $2 }' dump
}
for attempt in 1 2 3 4 5; do
    rm -f torn.log
    truncate -s 0 disk3.img
    truncate -s 32M disk3.img
    start_nbdkit sock err file disk3.img replica-log="$TMPD/torn.log" \
        replica-log-size=16M
    /usr/bin/python3 writer.py "$(uri_of sock)" $NBDKIT_PID
    kill_nbdkit_hard
    [ "$(records | wc -l)" = 2 ] && break
    echo "attempt $attempt: the checkpoint passed the records; retrying"
done
[ "$(records | wc -l)" = 2 ] || fail "no torn-batch log in 5 attempts"
read -r _ lsn < <(records | sed -n 2p)
[ $((lsn % 4096)) != 0 ] || fail "the 2nd record starts a block"
ring_offset=$(awk '$1 == "ring_offset" { print $2 }' dump)
ring_size=$(awk '$1 == "ring_size" { print $2 }' dump)
/usr/bin/python3 - torn.log $((ring_offset + lsn % ring_size + 64 + 100)) <<'PYEOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0xff]))
PYEOF
start_nbdkit sock err file disk3.img replica-log="$TMPD/torn.log"
nbdsh -u "$(uri_of sock)" -c 'h.pwrite(b"b" * 4096, 8 << 20)'
stop_nbdkit
truncate -s 32M blank3.img
if "$REPLICACTL" log-replay --all torn.log blank3.img 2>out; then
    fail "log-replay --all rebuilt from a history cut short"
fi
grep -q "before the checkpoint" out || { cat out; fail "message"; }
cmp -n 33554432 blank3.img /dev/zero ||
    fail "the refused log-replay wrote to the image"
echo "$0: OK"
