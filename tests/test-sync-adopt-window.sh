#!/usr/bin/env bash
# A pairing that loses its initial sync's start.  The primary's first
# CONTROLs to a new secondary are ADOPT (pair with this volume), then
# RESYNC (an initial sync follows); the secondary flushes its disk
# before it records the RESYNC.  Here that flush takes 2 s
# (tests/faultinject.so, "slow fdatasync" on the secondary's disk), and
# the secondary is SIGKILLed in between: paired, the RESYNC never
# recorded.  The pairing itself must say that a sync is owed
# (WIRE_ADOPT_SYNC, docs/design.md 21.1): restarted, the secondary is
# inconsistent, refuses promote without --force, and, with the primary
# back, gets its sync and ends byte-identical.  (Before the fix, it came
# back as a consistent known prefix of the primary: no sync, an empty
# disk served as the replica.)
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires cmp --version
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"
SIZE=$((16 * 1024 * 1024))

head -c $SIZE /dev/urandom > "$TMPD/pri.img"
truncate -s $SIZE "$TMPD/sec.img"

# The secondary with debug messages (-v): its "paired" line is the cue.
start_sec_verbose ()
{
    READY_URI=$(sec_uri) start_nbdkit "$TMPD/sec.sock" "$TMPD/sec.err" \
        -v --tls=require --tls-psk="$TMPD/keys.psk" \
        file "$TMPD/sec.img" replica-role=secondary \
        replica-log="$TMPD/sec.log" replica-log-size=64M \
        replica-control="$TMPD/sec.ctl"
    SEC_PID=$NBDKIT_PID
}

start_sec_verbose
echo "EIO fdatasync slow" > "$TMPD/trigger"
start_primary "$TMPD/pri.img" async
for i in $(seq 200); do
    grep -q "paired with the primary's volume" "$TMPD/sec.err" && break
    sleep 0.02
done
grep -q "paired with the primary's volume" "$TMPD/sec.err" ||
    fail "the secondary did not adopt the primary's volume"
kill -9 $SEC_PID
wait $SEC_PID 2>/dev/null || true
replicator_pid >/dev/null
PRI_RPID=$REPL_PID      # (it sent the ADOPT: it runs)
[ "$PRI_RPID" -gt 1 ] || fail "no replicator pid: '$PRI_RPID'"
grep -q "resync from the primary's seq .* starts" "$TMPD/sec.err" &&
    fail "the RESYNC was recorded before the kill: the window was missed"

# The primary away (its replicator too), the secondary back alone.
kill -9 "$PRI_RPID" $PRI_PID
wait $PRI_PID 2>/dev/null || true
rm -f "$TMPD/trigger"
start_sec_verbose
[ "$(status_field "$TMPD/sec.ctl" state)" = inconsistent ] || {
    "$REPLICACTL" --control "$TMPD/sec.ctl" status >&2
    fail "paired without its sync, the secondary does not say inconsistent"
}
"$REPLICACTL" --control "$TMPD/sec.ctl" promote 2>"$TMPD/err" &&
    fail "promote without --force of a secondary that never got its sync"
grep -q "being resynced" "$TMPD/err" || { cat "$TMPD/err"; fail "promote's refusal"; }

# The primary back: the sync runs, and the volumes end the same.
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
[ "$(status_field "$TMPD/sec.ctl" resync)" = none ] ||
    fail "the secondary's resync did not end"
[ "$(status_field "$TMPD/pri.ctl" sync_passes)" -ge 1 ] ||
    fail "no sync pass ran"
same_volumes
stop_pair
echo "$0: ok"
