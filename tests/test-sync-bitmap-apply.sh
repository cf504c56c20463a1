#!/usr/bin/env bash
# A bitmap pass starts from the primary's durable point (the bitmap took
# over the log's tail while the peer was away), so every record up to it
# must be applied to the primary's disk before the pass reads: a block
# read before its last write is applied, equal to the peer's older copy,
# is never re-sent, and that write is never shipped (it is before the
# base).  Here one write's apply to the primary's disk takes 20 s
# (tests/faultinject.so, "pwrite sleep=20" on the primary's volume: the
# file plugin writes with pwrite), and the peer comes back meanwhile:
# the pass must wait for it (wait_applied, docs/design.md 21.6), and the
# volumes end byte-identical.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
requires cmp --version
make_tmpdir
make_psk
use_fault_shim "$TMPD/pri.img"
SIZE=$((16 * 1024 * 1024))
export LOG_SIZE=16M

truncate -s $SIZE "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "the pair did not sync"

# The peer away; 64 KiB writes to the first 8 MiB until the bitmap takes
# over the log's tail.
kill -9 $SEC_PID
wait $SEC_PID 2>/dev/null || true
/usr/bin/python3 - "$(pri_uri)" "$TMPD/pri.ctl" "$REPLICACTL" <<'PY' ||
import json, nbd, os, subprocess, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for n in range(4096):
    h.pwrite(os.urandom(65536), (n % 128) * 65536)
    if n % 16 == 15:
        st = json.loads(subprocess.check_output(
            [sys.argv[3], "--control", sys.argv[2], "status", "--json"]))
        if st["bitmap"] == "tracking":
            break
else:
    sys.exit("the bitmap did not take over")
h.flush()
h.shutdown()
PY
    fail "filling the log"
wait_field "$TMPD/pri.ctl" bitmap tracking

# One 4 KiB write at 12 MiB, untouched since the peer left: durable in
# the log at once, on the primary's disk only after 20 s.
echo "EIO pwrite sleep=20 once" > "$TMPD/trigger"
/usr/bin/python3 - "$(pri_uri)" <<'PY' &
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(os.urandom(4096), 12 << 20)
h.shutdown()
PY
writer=$!
register_pid $writer
for i in $(seq 100); do
    [ -f "$TMPD/trigger" ] || break
    sleep 0.1
done
[ -f "$TMPD/trigger" ] && fail "the write's apply did not start"

# The peer back within the 20 s: a bitmap pass from the durable point.
start_secondary "$TMPD/sec.img"
wait $writer || fail "the write failed"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced after the pass"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" != tracking ] ||
    fail "the bitmap is still tracking after the pass"
same_volumes
stop_pair
echo "$0: ok"
