#!/usr/bin/env bash
# A primary refuses the wrong peer, with a clear reason in status and in
# nbdkit's log, and ships nothing to it: a disk of another size; after
# pairing, a secondary that belongs to another volume; a secondary that
# holds records the primary does not have (diverged: here the primary's
# log and disk are put back to an older state, as a crash that lost
# records the peer already had would); a secondary that was promoted
# (split brain).
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
    sec_nbdsh -c "assert h.pread(4096, 0) in (bytes(4096), b'A' * 4096)" \
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
received=$(status_field "$TMPD/sec.ctl" records_received)
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
expect_refused "diverged" "diverged"
rm -f "$TMPD/pri.log"
cp "$TMPD/old.log" "$TMPD/a.log"

# Split brain: the secondary was promoted; the old primary comes back.
"$REPLICACTL" --control "$TMPD/sec.ctl" promote
mv "$TMPD/a.log" "$TMPD/pri.log"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"S" * 4096, 0)'
expect_refused "split brain" "split brain"
echo "$0: ok"
