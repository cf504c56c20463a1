#!/usr/bin/env bash
# The role lives in the log.  A secondary serves its volume read-only
# (writes refused), a command line that disagrees with the recorded
# role is refused, and replicactl promote turns a secondary into a
# writable primary durably (a restart with the old command line,
# replica-role=secondary, is refused).
source "$SRCDIR/tests/functions.sh"
make_tmpdir
truncate -s 32M "$TMPD/disk.img"
printf 'OLD!' | dd of="$TMPD/disk.img" conv=notrunc status=none
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=8M "$@"
}

start replica-role=secondary
[ "$(status_field "$ctl" role)" = secondary ] || fail "role"
nbdsh -u "$uri" -c '
import errno
assert h.is_read_only(), "a secondary must be read-only to clients"
assert h.pread(4, 0) == b"OLD!"
try:
    h.pwrite(b"X" * 512, 0)
    assert False, "write accepted on a secondary"
except nbd.Error as e:
    assert e.errnum in (errno.EPERM, errno.EROFS), e
' || fail "secondary is not read-only"
[ "$(status_field "$ctl" records_appended)" = 0 ] || fail "a record was appended"
stop_nbdkit

# The recorded role wins over a disagreeing command line.
if run_nbdkit -f -U "$TMPD/sock2" --filter="$FILTER" file "$TMPD/disk.img" \
       replica-log="$TMPD/log" replica-role=primary 2>"$TMPD/err"; then
    fail "replica-role=primary accepted on a secondary's log"
fi
grep -q "replica-role: .* records role secondary, not primary" "$TMPD/err" ||
    { cat "$TMPD/err"; fail "message"; }

# Promote: durable, and new connections are writable.
start replica-role=secondary
"$REPLICACTL" --control "$ctl" promote
[ "$(status_field "$ctl" role)" = primary ] || fail "role after promote"
if "$REPLICACTL" --control "$ctl" promote 2>"$TMPD/err"; then
    fail "promote of a primary succeeded"
fi
grep -q "already the primary" "$TMPD/err" || { cat "$TMPD/err"; fail "message"; }
nbdsh -u "$uri" -c '
assert not h.is_read_only()
h.pwrite(b"NEW!", 0)
' || fail "write after promote"
kill_nbdkit_hard

if run_nbdkit -f -U "$TMPD/sock2" --filter="$FILTER" file "$TMPD/disk.img" \
       replica-log="$TMPD/log" replica-role=secondary 2>"$TMPD/err"; then
    fail "a promoted node restarted as a secondary"
fi
grep -q "records role primary, not secondary" "$TMPD/err" ||
    { cat "$TMPD/err"; fail "message"; }
start
[ "$(status_field "$ctl" role)" = primary ] || fail "role after restart"
nbdsh -u "$uri" -c 'assert h.pread(4, 0) == b"NEW!"' || fail "data"
stop_nbdkit
echo "$0: OK"
