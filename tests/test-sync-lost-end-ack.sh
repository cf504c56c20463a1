#!/usr/bin/env bash
# The acknowledgement of a pass's end record lost with the link.  An
# initial sync (full: no sums to wait for) runs to a secondary on TCP
# behind tests/count-relay.py; once the secondary has started the pass,
# the relay holds every byte the secondary sends back (RELAY_HOLD_DOWN),
# so the secondary applies the whole pass and its end record, and
# becomes consistent, while the primary hears nothing.  Then the
# replicator is SIGKILLed (the filter restarts it) and the relay lets
# bytes through again.  The new handshake finds the peer consistent and
# a known prefix of the primary's log: the pending initial sync is over
# (sync_peer_consistent, docs/design.md 21.2).  Before the fix, the
# primary stayed in "initial-sync" for good: wait-synced never
# returned and verify was refused.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
source "$SRCDIR/tests/sync-functions.sh"
requires cmp --version
make_tmpdir
make_psk
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"
SIZE=$((16 * 1024 * 1024))
HOLD=$TMPD/hold

head -c $SIZE /dev/urandom > "$TMPD/pri.img"
truncate -s $SIZE "$TMPD/sec.img"
start_tcp_secondary "$TMPD/sec.img"
RELAY_HOLD_DOWN=$HOLD start_relay "$TMPD/counts.json"
# 4 MiB/s of re-sent blocks: the pass lasts about 4 s.
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
    file "$TMPD/pri.img" replica-log="$TMPD/pri.log" replica-log-size=64M \
    replica-control="$TMPD/pri.ctl" replica-mode=async \
    replica-initial-sync=full replica-resync-rate=4M \
    replica-peer="nbds://replica@127.0.0.1:$RELAY_PORT/" \
    replica-tls-psk="$TMPD/keys.psk"
PRI_PID=$NBDKIT_PID

# The pass's records applied on the secondary (re-sent blocks, elided
# in place): the ADOPT and the RESYNC are answered, batches flow.  (Not
# the "in-place" status alone: the ADOPT shows it before the RESYNC is
# answered, and holding that answer would hold the pass.)
for i in $(seq 300); do
    [ "$(status_field "$TMPD/sec.ctl" elided_bytes)" -gt 0 ] && break
    sleep 0.1
done
[ "$(status_field "$TMPD/sec.ctl" elided_bytes)" -gt 0 ] ||
    fail "no re-sent block applied on the secondary after 30 s"
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = initial-sync ] ||
    fail "the initial sync ended before the relay held its replies"
touch "$HOLD"
# The secondary gets the rest of the pass, its end record included.
wait_field "$TMPD/sec.ctl" resync none 60
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = initial-sync ] ||
    fail "the primary heard the end of the pass through the held relay"

replicator_pid >/dev/null
rpid=$REPL_PID
[ "$rpid" -gt 1 ] || fail "no replicator pid: '$rpid'"
kill -9 "$rpid"
rm -f "$HOLD"
wait_field "$TMPD/pri.ctl" sync_phase none 30
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "wait-synced after the lost acknowledgement"
"$REPLICACTL" --control "$TMPD/pri.ctl" verify ||
    fail "verify after the lost acknowledgement"
same_volumes
NBDKIT_PID=$PRI_PID
stop_nbdkit
stop_relay "$TMPD/counts.json"
NBDKIT_PID=$SEC_PID
stop_nbdkit
echo "$0: ok"
