#!/usr/bin/env bash
# Data written through the filter reads back; status reports it.
source "$SRCDIR/tests/functions.sh"
make_tmpdir
truncate -s 64M "$TMPD/disk.img"
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
nbdsh -u "$(uri_of "$TMPD/sock")" -c '
import os
buf = os.urandom(1 << 20)
h.pwrite(buf, 12345)
h.flush()
assert h.pread(len(buf), 12345) == buf
'
[ "$(status_field "$TMPD/log.ctl" state)" = standalone ] || fail "state"
[ "$(status_field "$TMPD/log.ctl" records_appended)" -ge 2 ] || fail "records"
stop_nbdkit
echo "$0: OK"
