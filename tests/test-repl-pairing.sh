#!/usr/bin/env bash
# Pairing.  A primary that ran standalone (its log checkpointed past
# seq N) gets a peer: the unpaired secondary adopts the volume at the
# primary's checkpoint; the admin copied the disk and says so
# (replica-initial-sync=none: nothing is compared).  The
# secondary, restarted before any record reached it, still reports that
# base point and is accepted; then records flow and the disks stay equal.
# Last, the primary with replica-replicator=external and nbd-replicator
# run by hand (as systemd would): replication goes on.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 32M "$TMPD/pri.img"

# Standalone first: some writes, an orderly stop (checkpoint).
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-log-size=16M \
    replica-control="$TMPD/pri.ctl"
nbdsh -u "$(pri_uri)" -c '
for i in range(50):
    h.pwrite(bytes([i]) * 4096, i * 4096)'
stop_nbdkit
cp "$TMPD/pri.img" "$TMPD/sec.img"     # the admin's identical copy

LOG_SIZE=16M start_secondary "$TMPD/sec.img"
# The PSK file named in the URI's query this time.
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-control="$TMPD/pri.ctl" \
    replica-initial-sync=none \
    replica-peer="nbds+unix://replica@/?socket=$TMPD/sec.sock&tls-psk-file=$TMPD/keys.psk"
PRI_PID=$NBDKIT_PID
wait_field "$TMPD/pri.ctl" link replicating
[ "$(status_field "$TMPD/pri.ctl" initial_sync)" = none ] ||
    fail "status does not say that the disks were not compared"
[ "$(status_field "$TMPD/pri.ctl" sync_passes)" = 0 ] ||
    fail "replica-initial-sync=none ran a sync pass"
base=$(status_field "$TMPD/pri.ctl" acked_seq)
[ "$base" -ge 50 ] || fail "adopted at seq $base"
[ "$(status_field "$TMPD/sec.ctl" applied_seq)" = "$base" ] ||
    fail "the secondary's base is not the primary's"

# Restart the secondary before any record reached it.
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
[ "$(status_field "$TMPD/sec.ctl" applied_seq)" = "$base" ] ||
    fail "after a restart the secondary forgot its base point"
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c '
for i in range(50):
    h.pwrite(bytes([100 + i]) * 4096, (50 + i) * 4096)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
[ "$(status_field "$TMPD/sec.ctl" records_received)" = 50 ] ||
    fail "records_received: $(status_field "$TMPD/sec.ctl" records_received)"

# An external replicator.
NBDKIT_PID=$PRI_PID
stop_nbdkit
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-control="$TMPD/pri.ctl" \
    replica-replicator=external replica-mode=async
wait_field "$TMPD/pri.ctl" link connecting
[ "$(status_field "$TMPD/pri.ctl" replicator_pid)" = 0 ] ||
    fail "the filter started a replicator"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"E" * 65536, 0)'
"$REPLICATOR" --control "$TMPD/pri.ctl" \
    --peer "nbds+unix://replica@/?socket=$TMPD/sec.sock" \
    --tls-psk "$TMPD/keys.psk" 2>>"$TMPD/repl.err" &
register_pid $!
wait_field "$TMPD/pri.ctl" link replicating
[ "$(status_field "$TMPD/pri.ctl" replicator_pid)" = $! ] || fail "pid"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
echo "$0: ok"
