#!/usr/bin/env bash
# nbd-replica: the log stays broken: the journal fences it.
#
# tests/faultinject.c fails every fdatasync of the log file.  The failed
# append cannot even be invalidated durably (recovery zeroes the batch's
# first block and syncs: that sync fails too), so the journal fences the
# log and the volume fails (docs/design.md 5.4, "States"): state
# "failed", fault set, log_fenced true, and every read, write, zero and
# flush returns EIO, also after the device is back, until a restart.
# After SIGKILL and a restart on a healthy device, the volume works
# again, every acknowledged write is present, and a failed write is
# either absent or complete (its bytes may have reached the log before
# the sync failed; the client got an error, so both are allowed, but
# never torn).
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

use_fault_shim "$TMPD/log"
export REPLICACTL TMPD

truncate -s 64M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
}
start

cat > "$TMPD/fence.py" <<'EOF'
import errno, nbd, os, sys
uri, trigger = sys.argv[1], os.environ["REPLICA_FAULT_TRIGGER"]
M = 1 << 20
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"A" * 65536, 0)
with open(trigger, "w") as f:
    f.write("EIO fdatasync\n")
def must_fail(what, f):
    try:
        f()
    except nbd.Error as e:
        if e.errnum != errno.EIO:
            sys.exit("%s: %s, expected EIO" % (what, e))
    else:
        sys.exit("%s succeeded" % what)
must_fail("write with a failing log sync", lambda: h.pwrite(b"F" * 65536, M))
os.unlink(trigger)
# Fenced: still failing, though the device is fine again.
must_fail("write on a fenced log", lambda: h.pwrite(b"G" * 4096, 2 * M))
must_fail("flush on a fenced log", lambda: h.flush())
must_fail("zero on a fenced log", lambda: h.zero(4096, 2 * M))
must_fail("read on a failed volume", lambda: h.pread(4096, 0))
EOF
/usr/bin/python3 "$TMPD/fence.py" "$uri" || fail "fencing behaviour"
echo "status: $("$REPLICACTL" --control "$ctl" status --json)"
[ "$(status_field "$ctl" log_errors)" -ge 1 ] || fail "log_errors"
[ "$(status_field "$ctl" log_error)" = "Input/output error" ] || fail "log_error"
[ "$(status_field "$ctl" state)" = failed ] || fail "state is not failed"
[ "$(status_field "$ctl" log_fenced)" = True ] || fail "log_fenced is not true"
fault=$(status_field "$ctl" fault)
case "$fault" in *fenced*) ;; *) fail "fault does not say the log is fenced: $fault" ;; esac

kill_nbdkit_hard
start
[ "$(status_field "$ctl" state)" = standalone ] || fail "state after restart"
nbdsh -u "$uri" -c '
assert h.pread(65536, 0) == b"A" * 65536, "acknowledged write lost"
f = h.pread(65536, 1 << 20)
assert f in (bytes(65536), b"F" * 65536), "failed write is torn"
assert h.pread(4096, 2 << 20) == bytes(4096), "write refused while fenced was applied"
h.pwrite(b"H" * 4096, 3 << 20)
assert h.pread(4096, 3 << 20) == b"H" * 4096
' || fail "data after restart"
[ "$(status_field "$ctl" log_fenced)" = False ] || fail "log_fenced after restart"
stop_nbdkit
echo "$0: OK"
