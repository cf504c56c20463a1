#!/usr/bin/env bash
# Data written through the filter reads back; status reports it; only
# the default export is served.
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
# One volume, one log: only the default export is listed and served.
[ "$(nbdinfo --list --json "$(uri_of "$TMPD/sock")" |
     /usr/bin/python3 -c 'import json, sys
print(",".join(repr(e["export-name"]) for e in json.load(sys.stdin)["exports"]))')" = "''" ] ||
    fail "exports listed: $(nbdinfo --list "$(uri_of "$TMPD/sock")")"
if nbdsh -u "nbd+unix:///b?socket=$TMPD/sock" -c 'h.pwrite(b"B" * 512, 0)' \
        2>/dev/null; then
    fail "a write to export b was accepted"
fi
grep -q 'export "b" refused' "$TMPD/nbdkit.err" || fail "no error logged"
[ "$(status_field "$TMPD/log.ctl" records_appended)" -ge 2 ] || fail "records"
stop_nbdkit
echo "$0: OK"
