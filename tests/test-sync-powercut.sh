#!/usr/bin/env bash
# Power cuts, not only SIGKILLs: a killed process leaves its writes in
# the page cache, so a kill test cannot catch a missing fdatasync.
# tests/powercut.so records what every write of the shimmed nbdkit
# overwrote and which writes a completed sync made durable; after the
# SIGKILL, tests/powercut.py takes back the rest (for each 4 KiB page
# a random suffix of its unsynced writes: pages written back in any
# order), as a power cut at that moment could.  Then:
#  1. sync mode, both machines cut in a stamped write storm: the
#     secondary, restarted on what its disk kept and promoted, holds
#     every acknowledged write; so does the old primary, restarted
#     alone;
#  2. async mode, the peer away longer than the 16 MiB log (the writes
#     go to the dirty bitmap), the primary cut: restarted, it holds
#     every acknowledged write, and its bitmap still drives a resync
#     of the written half of the volume only;
#  3. both machines cut in the middle of that resync (the secondary
#     staging it), writes running: the primary holds every
#     acknowledged write, the resync resumes, and the volumes end
#     byte-identical;
#  4. both cut in the middle of an initial sync onto an empty secondary
#     (in place: its re-sent blocks go to its disk only, unsynced):
#     restarted alone, the secondary says it is inconsistent and
#     refuses promote without --force; with the primary back, the sync
#     runs again and the volumes end byte-identical;
#  5. sync mode, the primary alone cut, the secondary up (it may hold
#     records the primary's log lost: the peer's acknowledgement
#     overlaps our own fdatasync): restarted, the primary holds every
#     acknowledged write, and the pair converges, byte-identical.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
BLOCKS=16384                    # the stamps: the first 64 MiB
VOLUME=$((2 * BLOCKS * 4096))   # of a 128 MiB volume
SHIM="$BUILDDIR/tests/powercut.so"
[ -f "$SHIM" ] || fail "$SHIM is not built"
CUT="/usr/bin/python3 $SRCDIR/tests/powercut.py"
PLAIN_PRELOAD=${NBDKIT_PRELOAD:-}

# shimmed NAME CMD...: run CMD (start_primary, start_secondary) with the
# recorder preloaded into its nbdkit, recording into $TMPD/undo.NAME
# (and $EXTRA_PRELOAD after it).
shimmed ()
{
    local name=$1
    shift
    export REPLICA_POWERCUT_DIR="$TMPD" REPLICA_POWERCUT_UNDO="$TMPD/undo.$name"
    rm -f "$REPLICA_POWERCUT_UNDO"
    NBDKIT_PRELOAD="${PLAIN_PRELOAD:+$PLAIN_PRELOAD }$SHIM${EXTRA_PRELOAD:+ $EXTRA_PRELOAD}" "$@"
    unset REPLICA_POWERCUT_DIR REPLICA_POWERCUT_UNDO
}

# cut PID...: SIGKILL the PIDs at once (the power goes) and wait until
# they are gone.
cut ()
{
    local p
    for p in "$@"; do
        [ "$p" -gt 1 ] || fail "cut: no process '$p'"
    done
    kill -9 "$@" 2>/dev/null || true
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    for p in "$@"; do
        while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    done
}

# take_back NAME [may-be-none]: take back what the power cut lost of
# NAME's files (TAKEN: the pages); fails if that is nothing (the cut
# would prove nothing), unless may-be-none.  The secondary's may be
# none at one cut, not at all of them (SEC_TAKEN, checked at the end).
SEC_TAKEN=0
take_back ()
{
    local out
    out=$($CUT "$TMPD/undo.$1" "$TMPD" random "$RANDOM") ||
        fail "powercut.py $1"
    echo "$0: power cut of the $1: $out"
    [[ $out =~ ,\ ([0-9]+)\ pages\ taken ]] || fail "powercut.py said: $out"
    TAKEN=${BASH_REMATCH[1]}
    [ -n "${2:-}" ] || [ "$TAKEN" -gt 0 ] ||
        fail "the $1's cut took nothing back: $out"
}

# cut_both, cut_primary: the power goes on both machines (on the
# primary's alone) during the stamped writes; then the writer ends.
cut_both ()
{
    replicator_pid >/dev/null
    cut "$REPL_PID" "$PRI_PID" "$SEC_PID"
    take_back primary
    take_back secondary may-be-none
    SEC_TAKEN=$((SEC_TAKEN + TAKEN))
    wait $WRITER || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
}
cut_primary ()
{
    replicator_pid >/dev/null
    cut "$REPL_PID" "$PRI_PID"
    take_back primary
    wait $WRITER || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
}

# next_step: the running pair stopped, new empty volumes, no logs,
# stamps or undo records.
next_step ()
{
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    NBDKIT_PID=$SEC_PID
    stop_nbdkit
    rm -f "$TMPD"/*.log "$TMPD"/*.img "$TMPD/stamp.log" "$TMPD"/undo.*
    : >"$TMPD/pri.err"
    truncate -s $VOLUME "$TMPD/pri.img" "$TMPD/sec.img"
}

# stamps SECONDS: the stamped writer on the primary, in the background
# (appending to one log: one check covers all runs).  Sets WRITER.
stamps ()
{
    $STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 16 \
        --seconds "$1" --resume 1 >>"$TMPD/stamp.out" 2>&1 &
    WRITER=$!
    register_pid $WRITER
}

# check_stamps URI WHAT: every acknowledged write is on URI.
check_stamps ()
{
    $STAMP check "$1" $BLOCKS "$TMPD/stamp.log" --mode sync ||
        fail "$2: an acknowledged write is missing"
}

# start_alone: the primary restarted on its log without its peer.
start_alone ()
{
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
        file "$TMPD/pri.img" replica-log="$TMPD/pri.log" \
        replica-log-size=$LOG_SIZE replica-control="$TMPD/pri.ctl"
    PRI_PID=$NBDKIT_PID
}

# ---- 1: sync mode, both machines cut ----
export LOG_SIZE=32M
truncate -s $VOLUME "$TMPD/pri.img" "$TMPD/sec.img"
shimmed secondary start_secondary "$TMPD/sec.img"
shimmed primary start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating 60
stamps 3600
sleep 3
cut_both
acks=$(grep -c '^A' "$TMPD/stamp.log" || true)
[ "$acks" -gt 100 ] || fail "1: only $acks writes acknowledged"
start_secondary "$TMPD/sec.img"
"$REPLICACTL" --control "$TMPD/sec.ctl" promote ||
    fail "1: promote"
check_stamps "$(sec_uri)" "1: the promoted secondary"
start_alone
check_stamps "$(pri_uri)" "1: the old primary"

# ---- 2: async, an outage longer than the log, the primary cut ----
next_step
export LOG_SIZE=16M
start_secondary "$TMPD/sec.img"
shimmed primary start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
kill -9 $SEC_PID
wait $SEC_PID 2>/dev/null || true
stamps 3600
for i in $(seq 1 600); do
    [ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] && break
    kill -0 $WRITER 2>/dev/null || fail "2: the writer stopped"
    sleep 0.1
done
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "2: the log never overflowed into the bitmap"
sleep 1
cut_primary
start_alone
check_stamps "$(pri_uri)" "2: the primary"
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "2: the power cut lost the bitmap"
NBDKIT_PID=$PRI_PID
stop_nbdkit

# ---- 3: both cut in the middle of the resync ----
shimmed secondary start_secondary "$TMPD/sec.img"
shimmed primary start_primary "$TMPD/pri.img" async replica-resync-rate=4M
wait_field "$TMPD/pri.ctl" sync_phase resync 60
total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
[ "$total" -le $((BLOCKS * 4096)) ] ||
    fail "2: the resync covers $total bytes, more than the bytes written"
grep -q 'resync of the peer starts: .*dirty bitmap' "$TMPD/pri.err" ||
    fail "2: the resync was not the bitmap's"
stamps 3600
sleep 1.5
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = resync ] ||
    fail "3: the resync ended before the cut (raise its size)"
cut_both
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async
check_stamps "$(pri_uri)" "3: the primary"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120
same_volumes

# ---- 4: both cut in the middle of an initial sync (in place) ----
next_step
# The stamps' half zero (stamp.py checks every block it covers), the
# other half random data to copy.
dd if=/dev/urandom of="$TMPD/pri.img" bs=1M seek=$((BLOCKS / 256)) \
    count=$((BLOCKS / 256)) conv=notrunc status=none
shimmed secondary start_secondary "$TMPD/sec.img"
shimmed primary start_primary "$TMPD/pri.img" async replica-resync-rate=16M
wait_field "$TMPD/pri.ctl" sync_phase initial-sync 60
stamps 3600
sleep 2
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = initial-sync ] ||
    fail "4: the initial sync ended before the cut (raise its size)"
cut_both
# Alone, the secondary knows it is no image of anything yet.
start_secondary "$TMPD/sec.img"
[ "$(status_field "$TMPD/sec.ctl" state)" = inconsistent ] ||
    fail "4: the cut secondary says '$(status_field "$TMPD/sec.ctl" state)'"
"$REPLICACTL" --control "$TMPD/sec.ctl" promote 2>"$TMPD/promote.err" &&
    fail "4: an interrupted initial sync was promoted without --force"
grep -q "being resynced" "$TMPD/promote.err" ||
    fail "4: promote refused for another reason: $(cat "$TMPD/promote.err")"
start_primary "$TMPD/pri.img" async
check_stamps "$(pri_uri)" "4: the primary"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120
same_volumes

# ---- 5: sync mode, the primary alone cut, the secondary up ----
# The peer may hold records the primary's log lost: the replicator
# ships a batch once it is written, and the peer's acknowledgement
# overlaps our own fdatasync.  Every fdatasync of the primary's log
# takes 2 s here (tests/faultinject.so, "slow"), so the cut lands in
# one: the peer is ahead of what the primary keeps, and when the
# primary is back the pair must converge anyway (a resync).
next_step
export LOG_SIZE=32M
start_secondary "$TMPD/sec.img"
[ -f "$BUILDDIR/tests/faultinject.so" ] || fail "faultinject.so is not built"
export REPLICA_FAULT_TRIGGER="$TMPD/trigger"
export REPLICA_FAULT_PATH="$TMPD/pri.log"
EXTRA_PRELOAD="$BUILDDIR/tests/faultinject.so" \
    shimmed primary start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating 60
stamps 3600
sleep 1
echo "fdatasync slow" >"$TMPD/trigger"
sleep 3
cut_primary
rm -f "$TMPD/trigger"
unset REPLICA_FAULT_TRIGGER REPLICA_FAULT_PATH
start_primary "$TMPD/pri.img" sync
check_stamps "$(pri_uri)" "5: the primary"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120 ||
    fail "5: the pair did not converge after the primary's power cut"
grep -q 'resync of the peer starts' "$TMPD/pri.err" ||
    fail "5: no resync: the peer was not ahead of the cut primary" \
         "($(grep 'peer: role' "$TMPD/pri.err" | tail -1))"
same_volumes
[ "$SEC_TAKEN" -gt 0 ] ||
    fail "no cut of the secondary took anything back: its side proved nothing"
echo "$0: ok"
