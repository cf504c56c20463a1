#!/usr/bin/env bash
# A primary refuses the wrong peer, with a clear reason in status and in
# nbdkit's log, and ships nothing to it: a disk of another size; after
# pairing, a secondary that belongs to another volume; a secondary that
# was promoted (split brain).  A secondary that holds records the
# primary does not have (diverged: here the primary's log and disk are
# put back to an older state, as a crash that lost records the peer
# already had would) is not refused but resynced by checksums: its
# extra write is undone.  A batch that skips a record the secondary
# holds is refused by the secondary itself.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 32M "$TMPD/sec.img" "$TMPD/pri.img"
truncate -s 64M "$TMPD/big.img"

# expect_refused WHAT REGEX: the primary's link is refused for REGEX.
expect_refused ()
{
    wait_field "$TMPD/pri.ctl" link refused
    status_field "$TMPD/pri.ctl" link_error | grep -qE "$2" ||
        fail "$1: link_error is '$(status_field "$TMPD/pri.ctl" link_error)'"
    grep -qE "link refused: .*$2" "$TMPD/pri.err" ||
        fail "$1: not in nbdkit's log"
    if [ "$(status_field "$TMPD/sec.ctl" role)" = secondary ]; then
        [ "$(status_field "$TMPD/sec.ctl" records_received)" = "$received" ] ||
            fail "$1: records reached the refused peer"
    fi
    sec_nbdsh -c "assert h.pread(4096, 0) in (bytes(4096), b'A' * 4096,
                                             b'V' * 4096)" \
              -c "assert h.pread(4096, 4096) in (bytes(4096), b'N' * 4096)" ||
        fail "$1: a write reached the refused peer"
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    rm -f "$TMPD/pri.err"
}

LOG_SIZE=16M start_secondary "$TMPD/sec.img"
received=0
LOG_SIZE=16M start_primary "$TMPD/big.img" async
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"B" * 4096, 0)'
expect_refused "wrong size" "another size"
rm -f "$TMPD/pri.log"

# Pair, replicate.
LOG_SIZE=16M start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"A" * 4096, 0)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
received=$(status_field "$TMPD/sec.ctl" records_received)
[ "$received" -ge 1 ] || fail "nothing replicated"
NBDKIT_PID=$PRI_PID
stop_nbdkit
mv "$TMPD/pri.log" "$TMPD/a.log"

# Another volume (a new log) to the paired secondary.
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"V" * 4096, 0)'
expect_refused "another volume" "another volume"
rm -f "$TMPD/pri.log"

# Diverged: more writes reach the secondary, then the primary goes back
# to the state saved before them.
cp "$TMPD/a.log" "$TMPD/pri.log"
cp "$TMPD/pri.img" "$TMPD/old.img"
cp "$TMPD/a.log" "$TMPD/old.log"
LOG_SIZE=16M start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"N" * 4096, 4096)'
NBDKIT_PID=$PRI_PID
stop_nbdkit
cp "$TMPD/old.log" "$TMPD/pri.log"
cp "$TMPD/old.img" "$TMPD/pri.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
wait_field "$TMPD/pri.ctl" sync_passes 1
wait_field "$TMPD/pri.ctl" sync_phase none
wait_field "$TMPD/sec.ctl" resync none
grep -q "diverged" "$TMPD/pri.err" || fail "diverged: no reason in the log"
# Two blocks differ: 4096 (the write the primary lost) and 0 (where the
# refused primary of another volume wrote V on this disk, which the
# restored primary now serves).
[ "$(status_field "$TMPD/pri.ctl" sync_blocks_differing)" = 2 ] ||
    fail "diverged: $(status_field "$TMPD/pri.ctl" sync_blocks_differing) \
blocks differed, not the two that do"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
sec_nbdsh -c "assert h.pread(4096, 4096) == bytes(4096)" ||
    fail "diverged: the write the primary lost is still on the secondary"
NBDKIT_PID=$PRI_PID
stop_nbdkit
cp "$TMPD/pri.log" "$TMPD/a.log"
received=$(status_field "$TMPD/sec.ctl" records_received)

# Split brain: the secondary was promoted; the old primary comes back.
"$REPLICACTL" --control "$TMPD/sec.ctl" promote
mv "$TMPD/a.log" "$TMPD/pri.log"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"S" * 4096, 0)'
expect_refused "split brain" "split brain"
NBDKIT_PID=$SEC_PID
stop_nbdkit

# A batch that skips a record the secondary holds, into a newer epoch
# (the primary's append of it failed after it was shipped, and the
# handshake saw only the applied point): refused as diverged, never
# applied (tests/wire-inject.c --diverge).
rm -f "$TMPD/sec.log"
truncate -s 0 "$TMPD/sec.img"
truncate -s 32M "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
"$WIRE_INJECT" --diverge "nbds+unix://replica@/replica-replication?socket=$TMPD/sec.sock&tls-psk-file=$TMPD/keys.psk" ||
    fail "a diverged batch was not refused"
[ "$(status_field "$TMPD/sec.ctl" received_seq)" = 3 ] ||
    fail "received_seq $(status_field "$TMPD/sec.ctl" received_seq)"
echo "$0: ok"
