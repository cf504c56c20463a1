#!/usr/bin/env bash
# promote while the secondary still applies queued batches (its disk is
# held by nbdkit's pause filter):
#  1. the sync primary degrades meanwhile and tells the secondary it is
#     outdated, then acknowledges a write the secondary never gets:
#     promote without --force must be refused (it checked the flag
#     before the quiesce; the mark came during it), and the secondary
#     takes batches again afterwards;
#  2. the queue takes longer than replicactl's usual 10 s reply wait:
#     replicactl promote waits for the outcome instead of reporting a
#     failure for a promote that then happens;
#  3. replicactl promote interrupted meanwhile exits 3 (outcome unknown).
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk

# pausectl p|r: pause or resume the secondary's disk.
pausectl ()
{
    /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.send(sys.argv[2].encode())
assert s.recv(1) == sys.argv[2].upper().encode()' "$TMPD/pause.sock" "$1" ||
        fail "pause $1"
}

fresh_pair ()
{
    rm -f "$TMPD"/*.log
    truncate -s 0 "$TMPD/pri.img" "$TMPD/sec.img"
    truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
    LOG_SIZE=16M start_secondary "$TMPD/sec.img" --filter=pause \
        pause-control="$TMPD/pause.sock"
    LOG_SIZE=16M start_primary "$TMPD/pri.img" sync replica-sync-timeout=1 \
        replica-initial-sync=none
    wait_field "$TMPD/pri.ctl" link replicating
    "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
        fail "not synced"
}

# 1.
fresh_pair
pausectl p
nbdsh -u "$(pri_uri)" -c "h.pwrite(b'A' * 4096, 0)" &
w=$!
register_pid $w
sleep 0.5
"$REPLICACTL" --control "$TMPD/sec.ctl" promote >"$TMPD/promote.out" 2>&1 &
p=$!
register_pid $p
wait $w || fail "write A"
[ "$(status_field "$TMPD/pri.ctl" degraded)" = true ] || fail "not degraded"
nbdsh -u "$(pri_uri)" -c "h.pwrite(b'B' * 4096, 4096)" || fail "write B"
# The TELL OUTDATED goes to the secondary's log, not through the pause.
wait_log_flag "$TMPD/sec.log" outdated
pausectl r
rc=0
wait $p || rc=$?
[ $rc = 1 ] || { cat "$TMPD/promote.out"; fail "promote exit status $rc"; }
grep -q "outdated" "$TMPD/promote.out" ||
    { cat "$TMPD/promote.out"; fail "promote's message"; }
[ "$(status_field "$TMPD/sec.ctl" role)" = secondary ] ||
    fail "the refused promote changed the role"
# The refusal undid the quiesce: the secondary catches up and is told
# it is up to date.
wait_field "$TMPD/pri.ctl" degraded false
wait_field "$TMPD/sec.ctl" outdated false
sec_nbdsh -c 'assert h.pread(4096, 4096) == b"B" * 4096' ||
    fail "write B did not reach the secondary"
stop_pair

# held_promote: a pair whose secondary holds a record it cannot apply
# (its disk paused) when the primary dies; promote is started there.
# Sets P, the replicactl's PID.
held_promote ()
{
    fresh_pair
    pausectl p
    nbdsh -u "$(pri_uri)" -c "h.pwrite(b'C' * 4096, 0)" &
    w=$!
    register_pid $w
    for _ in $(seq 1 100); do
        [ "$(status_field "$TMPD/sec.ctl" received_seq)" -gt \
          "$(status_field "$TMPD/sec.ctl" applied_seq)" ] && break
        sleep 0.1
    done
    [ "$(status_field "$TMPD/sec.ctl" received_seq)" -gt \
      "$(status_field "$TMPD/sec.ctl" applied_seq)" ] ||
        fail "no record waits to be applied"
    # The primary dies: nothing will mark the secondary outdated.
    replicator_pid >/dev/null
    kill -9 "$REPL_PID" "$PRI_PID"
    wait "$PRI_PID" 2>/dev/null || true
    wait $w 2>/dev/null || true
    "$REPLICACTL" --control "$TMPD/sec.ctl" promote >"$TMPD/promote.out" 2>&1 &
    P=$!
    register_pid $P
}

# 2. The wait outlasts replicactl's usual 10 s: it waits for the outcome.
held_promote
sleep 12
pausectl r
rc=0
wait $P || rc=$?
role=$(status_field "$TMPD/sec.ctl" role)
[ $rc = 0 ] && [ "$role" = primary ] ||
    { cat "$TMPD/promote.out"; fail "promote exit status $rc, role $role"; }
NBDKIT_PID=$SEC_PID
stop_nbdkit

# 3. replicactl is interrupted (SIGTERM, as timeout(1) sends): exit 3,
#    "outcome unknown" (the promote goes on and succeeds).
held_promote
sleep 1
kill -TERM $P
rc=0
wait $P || rc=$?
[ $rc = 3 ] || { cat "$TMPD/promote.out"; fail "interrupted: exit status $rc"; }
grep -q "may or may not have been promoted" "$TMPD/promote.out" ||
    { cat "$TMPD/promote.out"; fail "interrupted: message"; }
pausectl r
wait_field "$TMPD/sec.ctl" role primary
NBDKIT_PID=$SEC_PID
stop_nbdkit
echo "$0: ok"
