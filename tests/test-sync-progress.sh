#!/usr/bin/env bash
# A bitmap resync's progress stays sane while clients dirty chunks the
# walk has not reached yet: its total counts them when the walk finds
# them, so done never passes total and remaining never wraps around
# (it did: 2^64 - 64 MiB).  The secondary is away while 32 MiB of writes
# overflow a 16 MiB log (the dirty bitmap takes over), then back; the
# pass is slowed (replica-resync-rate=2M) so that status is sampled
# throughout.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 256M "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async replica-resync-rate=2M
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
nbdsh -u "$(pri_uri)" -c '
import os, random
r = random.Random(1)
for i in range(512):
    h.pwrite(os.urandom(65536), r.randrange(0, 256) * 65536)
for c in range(1, 10):
    h.pwrite(os.urandom(4096), c * (16 << 20))' || fail "writes"
wait_field "$TMPD/pri.ctl" bitmap tracking 30
start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" sync_phase resync 30
# A wait-synced that times out now says why: the resync, not the seqs.
rc=0
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 0.5 \
    2>"$TMPD/ws.err" || rc=$?
cat "$TMPD/ws.err"
[ $rc = 1 ] || fail "wait-synced during the resync: exit $rc"
grep -q "timed out after 0.5 s: resync still running" "$TMPD/ws.err" ||
    fail "wait-synced's timeout does not name the running resync"
# Chunks the walk has not reached yet.
nbdsh -u "$(pri_uri)" -c '
import os
for c in range(12, 16):
    h.pwrite(os.urandom(4096), c * (16 << 20))' || fail "writes"
samples=0
for _ in $(seq 1 300); do
    "$REPLICACTL" --control "$TMPD/pri.ctl" status --json >"$TMPD/st.json"
    /usr/bin/python3 - "$TMPD/st.json" <<'PY' || fail "progress: see above"
import json, sys
o = json.load(open(sys.argv[1]))
t, d, r = (o["sync_total_bytes"], o["sync_done_bytes"],
           o["sync_remaining_bytes"])
if not (d <= t and r == t - d):
    sys.exit("phase %s total %d done %d remaining %d"
             % (o["sync_phase"], t, d, r))
PY
    samples=$((samples + 1))
    # (The last sample is taken after the end: the counters stay.)
    [ "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sync_phase"])' "$TMPD/st.json")" = none ] && break
    sleep 0.5
done
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = none ] ||
    fail "the resync did not end"
echo "$samples status samples during the resync"
[ "$samples" -ge 3 ] || fail "only $samples status samples during the resync"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced at the end"
same_volumes
stop_pair
echo "$0: ok"
