#!/usr/bin/env bash
# replicactl verify: a block corrupted behind the secondary's back is
# found (its range listed, the counter at one), --repair re-sends it
# and returns once the peer acknowledged the resent block (its log's
# sync slowed by 2 s, tests/faultinject.c), and a verify then finds the
# sides equal (counters at zero).  Under a
# storm of writes and trims, verify reports no false difference.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.log"
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" sync
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
nbdsh -u "$(pri_uri)" -c '
import os
for i in range(256):
    h.pwrite(os.urandom(65536), i * 262144)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60

# Clean first.
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 60 ||
    fail "verify of equal volumes failed"
[ "$(status_field "$TMPD/pri.ctl" verify_mismatched_blocks)" = 0 ] ||
    fail "mismatches on equal volumes"

# Corrupt block 1000 of the secondary's disk behind its back.
dd if=/dev/urandom of="$TMPD/sec.img" bs=4096 seek=1000 count=1 \
   conv=notrunc status=none
if "$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 60 \
       > "$TMPD/verify.out"; then
    fail "verify did not notice the corrupted block"
fi
cat "$TMPD/verify.out"
[ "$(status_field "$TMPD/pri.ctl" verify_state)" = mismatch ] ||
    fail "verify_state is $(status_field "$TMPD/pri.ctl" verify_state)"
[ "$(status_field "$TMPD/pri.ctl" verify_mismatched_blocks)" = 1 ] ||
    fail "$(status_field "$TMPD/pri.ctl" verify_mismatched_blocks) blocks"
"$REPLICACTL" --control "$TMPD/pri.ctl" status --json |
    /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)["verify_ranges"]
assert r == [{"offset": 4096000, "length": 4096}], r'

echo "EIO fdatasync sleep=2 once" >"$TMPD/trigger"
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --repair --timeout 60 ||
    fail "verify --repair failed"
[ "$(status_field "$TMPD/pri.ctl" acked_seq)" -ge \
  "$(status_field "$TMPD/pri.ctl" last_seq)" ] ||
    fail "verify --repair returned before the peer acknowledged the repair"
[ -f "$TMPD/trigger" ] && fail "the repair never reached the peer's log"
[ "$(status_field "$TMPD/pri.ctl" verify_state)" = repaired ] ||
    fail "verify_state is $(status_field "$TMPD/pri.ctl" verify_state)"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 60 ||
    fail "still different after --repair"
[ "$(status_field "$TMPD/pri.ctl" verify_mismatched_blocks)" = 0 ] ||
    fail "the counter is not back to zero"
same_volumes

# A storm of writes and trims during the verify: no false difference.
/usr/bin/python3 - "$(pri_uri)" "$TMPD/stop" <<'PY' &
import nbd, os, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
rnd = random.Random(3)
while not os.path.exists(sys.argv[2]):
    for _ in range(16):
        off = rnd.randrange(0, 16384) * 4096
        if rnd.random() < 0.2:
            h.trim(4096 * rnd.randrange(1, 16), min(off, 64 * 2**20 - 65536))
        else:
            h.pwrite(os.urandom(4096), off)
h.shutdown()
PY
storm=$!
register_pid $storm
sleep 0.5
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 120 ||
    fail "verify reported differences under a write and trim storm"
touch "$TMPD/stop"
wait $storm || fail "the storm failed"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
same_volumes
echo "$0: ok"
