#!/usr/bin/env bash
# nbd-replica: a corrupt record in the log tail cuts the log there.
#
# Recovery replays the records after the checkpoint in seq order and
# stops at the first record that is empty, torn, corrupt or out of
# sequence: the log tail is cut at the last valid record.  Records after
# a corrupt one are never applied, even if they are intact themselves
# (they may depend on the lost one), and they never come back later.
#
# Method: write 6 blocks (one record each) and SIGKILL nbdkit at once,
# before the checkpointer (every second) can pass them; retried if it
# did.  Flip a payload byte of the 3rd record after the checkpoint, and
# put the starting image back as the backing (as if the backing had
# lost everything not checkpointed), then restart:
#  - log-dump reports 2 records and a "corrupt" end at the 3rd;
#  - replay applies records 1-2 (status replayed_records = 2), and the
#    slots of records 3-6 still hold the starting image's data;
#  - a new write after the restart, killed and replayed again, is
#    applied, and the cut records 4-6 (still physically in the ring
#    after it) stay unapplied.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

size=$((64 * 1024 * 1024))
head -c $size /dev/urandom > "$TMPD/start.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
}

# writer.py URI PID SEED OFFSET...: write a 4 KiB block derived from
# SEED and the offset to each OFFSET in turn (no flush), then SIGKILL
# nbdkit straight away.
cat > "$TMPD/writer.py" <<'EOF'
import nbd, os, signal, sys, hashlib
uri, pid, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
h = nbd.NBD()
h.connect_uri(uri)
for off in map(int, sys.argv[4:]):
    h.pwrite(hashlib.sha512(("%s:%d" % (seed, off)).encode()).digest() * 64,
             off)
os.kill(pid, signal.SIGKILL)
EOF

# check.py URI SEED NEW_OFFSETS OLD_OFFSETS: the block at each NEW offset
# is the written one, at each OLD offset the starting image's.
cat > "$TMPD/check.py" <<'EOF'
import nbd, sys, hashlib
uri, seed, start = sys.argv[1:4]
new = [int(x) for x in sys.argv[4].split(",") if x]
old = [int(x) for x in sys.argv[5].split(",") if x]
h = nbd.NBD()
h.connect_uri(uri)
img = open(start, "rb")
bad = 0
for off in new:
    want = hashlib.sha512(("%s:%d" % (seed, off)).encode()).digest() * 64
    if h.pread(4096, off) != want:
        print("offset %d: the record before the cut was NOT applied" % off)
        bad += 1
for off in old:
    img.seek(off)
    if h.pread(4096, off) != img.read(4096):
        print("offset %d: a record at/after the cut WAS applied" % off)
        bad += 1
sys.exit(1 if bad else 0)
EOF

# dump_records: "seq lsn op offset" of each record after the checkpoint.
dump_records () {
    "$REPLICACTL" log-dump "$TMPD/log" > "$TMPD/dump.txt"
    awk '/^records after the checkpoint:/ { on = 1; getline; next }
         on && NF == 8 { print $1, $2, $4, $5 }' "$TMPD/dump.txt"
}
dump_field () { awk -v k="$1" '$1 == k { print $2; exit }' "$TMPD/dump.txt"; }

offsets=(4096 1048576 2101248 8388608 16781312 33554432)
seed=$RANDOM$RANDOM
ok=
for attempt in 1 2 3 4 5; do
    rm -f "$TMPD/log"
    cp "$TMPD/start.img" "$TMPD/disk.img"
    start
    /usr/bin/python3 "$TMPD/writer.py" "$uri" $NBDKIT_PID $seed "${offsets[@]}"
    kill_nbdkit_hard
    dump_records > "$TMPD/recs.txt"
    if [ "$(wc -l < "$TMPD/recs.txt")" = ${#offsets[@]} ] &&
       [ "$(awk '{ print $4 }' "$TMPD/recs.txt" | paste -sd' ')" = \
         "${offsets[*]}" ]; then
        ok=1
        break
    fi
    echo "attempt $attempt: the checkpoint passed some records; retrying"
    cat "$TMPD/recs.txt"
done
[ -n "$ok" ] || fail "could not kill nbdkit before the checkpoint in 5 attempts"
cat "$TMPD/recs.txt"

ring_offset=$(dump_field ring_offset)
ring_size=$(dump_field ring_size)
read -r k_seq k_lsn k_op _ < <(sed -n 3p "$TMPD/recs.txt")
[ "$k_op" = write ] || fail "3rd record is a $k_op"
# Flip one byte 100 bytes into the payload (after the 64-byte header).
pos=$((ring_offset + k_lsn % ring_size + 64 + 100))
/usr/bin/python3 - "$TMPD/log" $pos <<'EOF'
import sys
path, pos = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0xff]))
EOF

# The offline view: the log ends, corrupt, at the 3rd record.
dump_records > "$TMPD/recs2.txt"
last=$(tail -1 "$TMPD/dump.txt")
echo "log-dump: $last"
[ "$(wc -l < "$TMPD/recs2.txt")" = 2 ] || fail "log-dump lists records after the corrupt one"
case "$last" in
    "2 records; end of log at lsn $k_lsn: corrupt (record seq $k_seq at lsn $k_lsn: checksum mismatch"*) ;;
    *) fail "log-dump does not report the corrupt record seq $k_seq at lsn $k_lsn" ;;
esac

# Restart on the starting image: only the records before the cut apply.
cp "$TMPD/start.img" "$TMPD/disk.img"
start
replayed=$(status_field "$ctl" replayed_records)
[ "$replayed" = 2 ] || fail "replayed $replayed records, expected 2"
case "$(status_field "$ctl" replay_end)" in
    *"checksum mismatch"*) ;;
    *) fail "status replay_end does not report the cut: $(status_field "$ctl" replay_end)" ;;
esac
join () { local IFS=,; echo "$*"; }
/usr/bin/python3 "$TMPD/check.py" "$uri" $seed "$TMPD/start.img" \
    "$(join "${offsets[@]:0:2}")" "$(join "${offsets[@]:2}")" ||
    fail "data after replaying a log with a corrupt record"

# The cut tail never comes back: a new write (it lands where the corrupt
# record was), killed and replayed, is applied; records 4-6 are not.
new_off=50331648
/usr/bin/python3 "$TMPD/writer.py" "$uri" $NBDKIT_PID $seed $new_off
kill_nbdkit_hard
dump_records > "$TMPD/recs3.txt"
echo "after the second kill: $(tail -1 "$TMPD/dump.txt")"
if [ "$(awk '{ print $4 }' "$TMPD/recs3.txt")" = $new_off ]; then
    cp "$TMPD/start.img" "$TMPD/disk.img"
    expect_replayed=1
else
    # The checkpoint passed it: it is on the backing already.
    [ ! -s "$TMPD/recs3.txt" ] || fail "unexpected records: $(cat "$TMPD/recs3.txt")"
    expect_replayed=0
fi
start
replayed=$(status_field "$ctl" replayed_records)
[ "$replayed" = $expect_replayed ] ||
    fail "second restart replayed $replayed records, expected $expect_replayed"
/usr/bin/python3 "$TMPD/check.py" "$uri" $seed "$TMPD/start.img" \
    $new_off "$(join "${offsets[@]:2}")" ||
    fail "data after the second restart"
stop_nbdkit
echo "$0: OK"
