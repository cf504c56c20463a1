#!/usr/bin/env bash
# nbd-replica: SIGKILL of nbdkit in the middle of a write storm loses no
# acknowledged write, and replay never brings back an older version.
#
# Four client processes, one connection each, write 4 KiB blocks.  Each
# writer owns its own slots (offsets) and rewrites them again and again
# in random order, one request at a time; every block is stamped with
# (round, writer, write id, its own offset).  A writer notes each write
# in its journal file before sending it ("I") and after the server
# acknowledged it ("A").  nbdkit is killed with SIGKILL at a random
# moment, restarted on the same log (replay), and then every slot must
# hold exactly its last acknowledged version, or the writer's last,
# unacknowledged write (in flight at the kill: either outcome is
# allowed), never a torn block, an older version or a misplaced one.
# The 32M log wraps several times per round, so older versions of the
# slots lie in older laps of the ring: a replay that took any of them
# for part of the log would be caught.
# Before each restart, the ranges of the records after the checkpoint are
# overwritten with junk on the backing file (the backing only promises
# what the checkpoint covers), so the check depends on the replay.
# Three rounds on the same disk and log, each in its own region; each
# restart's check covers all rounds so far.  At least one restart must
# have replayed records (status replayed_records), else the test proves
# nothing about replay.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

size=$((64 * 1024 * 1024))
nw=4
rounds=3
region=$((size / rounds / 4096 / nw * nw))     # slots per round
truncate -s $size "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=32M
}

cat > "$TMPD/writer.py" <<'EOF'
import nbd, os, random, struct, sys
uri, rnd_, wid, nw, first, nslots, jpath = sys.argv[1:8]
rnd_, wid, nw, first, nslots = map(int, (rnd_, wid, nw, first, nslots))
slots = list(range(first + wid, first + nslots, nw))
rnd = random.Random(os.urandom(16))
h = nbd.NBD()
h.connect_uri(uri)
open(jpath + ".up", "w").close()        # connected: the kill may come
with open(jpath, "a") as j:
    wrid = 0
    while True:
        off = rnd.choice(slots) * 4096
        j.write("I %d %d %d %d\n" % (off, rnd_, wid, wrid))
        j.flush()
        try:
            h.pwrite(struct.pack("<8sIIQQ", b"RPLCRASH", rnd_, wid, wrid, off)
                     * 128, off)
        except nbd.Error:
            break               # the server was killed: expected
        j.write("A %d %d %d %d\n" % (off, rnd_, wid, wrid))
        j.flush()
        wrid += 1
EOF

cat > "$TMPD/verify.py" <<'EOF'
import nbd, struct, sys, glob
uri, tmpd = sys.argv[1], sys.argv[2]
nrounds, region = int(sys.argv[3]), int(sys.argv[4])
def stamp(off, rnd_, wid, wrid):
    return struct.pack("<8sIIQQ", b"RPLCRASH", rnd_, wid, wrid, off) * 128
acked = {}          # offset -> its last acknowledged block
maybe = {}          # offset -> a writer's last, unacknowledged block
nacks = 0
for p in glob.glob(tmpd + "/journal.*[0-9]"):
    last = None
    for line in open(p):
        f = line.split()
        off, rnd_, wid, wrid = map(int, f[1:])
        if f[0] == "A":
            acked[off] = stamp(off, rnd_, wid, wrid)
            nacks += 1
            last = None
        else:
            last = (off, stamp(off, rnd_, wid, wrid))
    if last:
        maybe[last[0]] = last[1]
h = nbd.NBD()
h.connect_uri(uri)
end = nrounds * region * 4096
chunk = 4 << 20
bad = inflight = 0
zero = bytes(4096)
for base in range(0, end, chunk):
    n = min(chunk, end - base)
    buf = h.pread(n, base)
    for i in range(0, n, 4096):
        off = base + i
        blk = buf[i:i + 4096]
        ok = [acked.get(off, zero)]
        if off in maybe:
            ok.append(maybe[off])
        if blk not in ok:
            bad += 1
            if bad <= 5:
                print("offset %d holds %r, expected %r%s" % (
                    off, blk[:32], ok[0][:32],
                    " or %r" % ok[1][:32] if len(ok) > 1 else ""))
        elif len(ok) > 1 and blk == ok[1] and blk != ok[0]:
            inflight += 1
print("%d acknowledged writes to %d slots checked, %d in-flight writes"
      " present, %d bad" % (nacks, len(acked), inflight, bad))
sys.exit(1 if bad or not acked else 0)
EOF

start
max_replayed=0
for r in $(seq 0 $((rounds - 1))); do
    pids=()
    for w in $(seq 0 $((nw - 1))); do
        /usr/bin/python3 "$TMPD/writer.py" "$uri" $r $w $nw \
            $((r * region)) $region "$TMPD/journal.$r.$w" &
        register_pid $!
        pids+=($!)
    done
    # Every writer connected (a kill before that fails its connect,
    # which is no test of the log), then a kill at a random moment
    # 0.3 .. 2.3 s into the storm.
    for _ in $(seq 1 200); do
        [ "$(ls "$TMPD"/journal.$r.*.up 2>/dev/null | wc -l)" = $nw ] && break
        sleep 0.1
    done
    [ "$(ls "$TMPD"/journal.$r.*.up 2>/dev/null | wc -l)" = $nw ] ||
        fail "round $r: the writers did not connect within 20 s"
    delay=$(( 300 + RANDOM % 2000 ))
    sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || fail "round $r: writer $p died early"
    done
    kill_nbdkit_hard
    for p in "${pids[@]}"; do
        wait "$p" || fail "round $r: writer $p failed"
    done
    acks=$(cat "$TMPD"/journal.$r.* | grep -c '^A' || true)
    echo "round $r: killed after ${delay} ms, $acks writes acknowledged"
    [ "$acks" -gt 0 ] || fail "round $r: no write was acknowledged"
    # The backing only promises what the checkpoint covers: make it lose
    # every write after it (zero their ranges), so the check below
    # depends on replay (a SIGKILL alone loses nothing from the page
    # cache).
    "$REPLICACTL" log-dump "$TMPD/log" > "$TMPD/dump.txt"
    tail -1 "$TMPD/dump.txt"
    /usr/bin/python3 - "$TMPD/dump.txt" "$TMPD/disk.img" <<'EOF'
import sys
dump, disk = sys.argv[1:3]
on = False
with open(disk, "r+b") as f:
    for line in open(dump):
        w = line.split()
        if line.startswith("records after the checkpoint"):
            on = True
        elif on and len(w) == 8 and w[3] in ("write", "zero", "trim"):
            f.seek(int(w[4]))
            f.write(b"\xee" * int(w[5]))
EOF

    start
    replayed=$(status_field "$ctl" replayed_records)
    echo "round $r: restart replayed $replayed records"
    [ "$replayed" -gt "$max_replayed" ] && max_replayed=$replayed
    /usr/bin/python3 "$TMPD/verify.py" "$uri" "$TMPD" $((r + 1)) $region ||
        fail "round $r: data check after restart"
done
stop_nbdkit
[ "$max_replayed" -gt 0 ] ||
    fail "no restart replayed any record: the crash was never exercised"
if grep -iE 'error|Sanitizer' "$TMPD/nbdkit.err"; then
    fail "nbdkit reported errors"
fi
echo "$0: OK"
