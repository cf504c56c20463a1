#!/usr/bin/env bash
# replicactl demote (failback, offline): the log of a stopped primary
# becomes a secondary's, paired and marked for a checksum resync, with
# the same volume UUID and pair secret; nbdkit then starts on it as a
# secondary.  Refused while nbdkit holds the log ("stop nbdkit first",
# the log unchanged) and for a log that is already a secondary's.
# Also: replicactl verify prints the filter's refusal and exits 1, both
# from this filter (no peer) and from one that does not know verify.
source "$SRCDIR/tests/functions.sh"
make_tmpdir
log="$TMPD/log"
ctl="$TMPD/log.ctl"
uri=$(uri_of "$TMPD/sock")
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        memory 32M replica-log="$1" replica-log-size=8M "${@:2}"
}
# dump_field LOG KEY: a superblock line of log-dump.
dump_field () {
    "$REPLICACTL" log-dump --records 0 "$1" |
        awk -v k="$2" '$1 == k && !n++ { print $2 }'
}
# sb_secret LOG: the pair secret of the newer superblock slot, in hex.
sb_secret () {
    /usr/bin/python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    slots = [f.read(4096), f.read(4096)]
best = max((s for s in slots if s[:8] == b"NBDRLOG\x01"),
           key=lambda s: struct.unpack_from("<Q", s, 16)[0])
print(best[152:184].hex())
EOF
}

# A primary's log, with a few records in it.
start "$log"
[ "$(status_field "$ctl" role)" = primary ] || fail "role"
nbdsh -u "$uri" -c 'h.pwrite(b"A" * 65536, 0); h.flush()' || fail "write"

# verify: the filter's refusal (a standalone primary has no peer to
# compare with) is printed as the filter sent it, exit status 1.
ctl_raw () {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print(json.loads(data).get("error", ""))
EOF
}
why=$(ctl_raw "$ctl" verify)
[ -n "$why" ] || fail "the filter accepted verify on a standalone primary"
set +e
"$REPLICACTL" --control "$ctl" verify --timeout 10 >"$TMPD/out" 2>"$TMPD/err"
st=$?
set -e
cat "$TMPD/out" "$TMPD/err"
[ $st = 1 ] || fail "verify refused: exit status $st"
grep -qF "replicactl: verify refused: $why" "$TMPD/err" ||
    fail "the filter's error is not printed"

# A filter that does not know the command (an older one, here a stand-in
# control socket): its "unknown command" is printed, exit status 1.
/usr/bin/python3 - "$TMPD/old.ctl" <<'EOF' &
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".tmp")
s.listen(1)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept()
    cmd = c.makefile("rb").readline().decode().strip()
    c.sendall(json.dumps({"error": "unknown command",
                          "command": cmd}).encode() + b"\n")
    c.close()
EOF
register_pid $!
for i in $(seq 1 50); do [ -S "$TMPD/old.ctl" ] && break; sleep 0.1; done
set +e
"$REPLICACTL" --control "$TMPD/old.ctl" verify --repair 2>"$TMPD/err"
st=$?
set -e
cat "$TMPD/err"
[ $st = 1 ] || fail "verify against an old filter: exit status $st"
grep -q '^replicactl: verify refused: unknown command' "$TMPD/err" ||
    fail "the filter's 'unknown command' is not printed"

# Demote while nbdkit holds the log: refused, nothing changed.
uuid=$(dump_field "$log" volume_uuid)
secret=$(sb_secret "$log")
[ -n "$uuid" ] && [ -n "$secret" ] || fail "cannot read the superblock"
flags=$(dump_field "$log" flags)
if "$REPLICACTL" demote "$log" >"$TMPD/out" 2>"$TMPD/err"; then
    fail "demote succeeded while nbdkit runs on the log"
fi
cat "$TMPD/err"
grep -q 'stop nbdkit first' "$TMPD/err" || fail "message"
[ "$(dump_field "$log" role)" = primary ] || fail "role changed"
[ "$(dump_field "$log" flags)" = "$flags" ] || fail "flags changed"
[ "$(sb_secret "$log")" = "$secret" ] || fail "secret changed"
[ "$(status_field "$ctl" role)" = primary ] || fail "running role changed"
nbdsh -u "$uri" -c 'h.pwrite(b"B" * 4096, 0)' ||
    fail "the primary stopped serving writes"
stop_nbdkit

# Demote the stopped primary.
"$REPLICACTL" demote "$log" >"$TMPD/out" || fail "demote failed"
cat "$TMPD/out"
grep -q "replica-log=$log" "$TMPD/out" || fail "no next steps"
[ "$(dump_field "$log" role)" = secondary ] || fail "role after demote"
[ "$(dump_field "$log" flags)" = paired,resync,foreign ] ||
    fail "flags after demote: $(dump_field "$log" flags)"
[ "$(dump_field "$log" volume_uuid)" = "$uuid" ] || fail "uuid changed"
[ "$(sb_secret "$log")" = "$secret" ] || fail "pair secret changed"

# Demote again: it is a secondary's log now; refused, unchanged.
md5=$(md5sum < "$log")
if "$REPLICACTL" demote "$log" 2>"$TMPD/err"; then
    fail "demote of a secondary's log succeeded"
fi
cat "$TMPD/err"
grep -q "already a secondary" "$TMPD/err" || fail "message"
[ "$(md5sum < "$log")" = "$md5" ] || fail "a refused demote changed the log"

# The same for a log created as a secondary's.
start "$TMPD/log2" replica-role=secondary
stop_nbdkit
md5=$(md5sum < "$TMPD/log2")
if "$REPLICACTL" demote "$TMPD/log2" 2>"$TMPD/err"; then
    fail "demote of a secondary's log succeeded"
fi
grep -q "already a secondary" "$TMPD/err" || { cat "$TMPD/err"; fail "message"; }
[ "$(md5sum < "$TMPD/log2")" = "$md5" ] || fail "a refused demote changed log2"

# Usage errors and a missing log.
set +e
"$REPLICACTL" demote 2>/dev/null; [ $? = 2 ] || fail "demote without LOG"
"$REPLICACTL" demote "$TMPD/nolog" 2>/dev/null; [ $? = 1 ] ||
    fail "demote of a missing log"
set -e

# nbdkit starts on the demoted log as a secondary (the log's role wins).
start "$log"
[ "$(status_field "$ctl" role)" = secondary ] || fail "role when started"
[ "$(status_field "$ctl" volume_uuid)" = "$uuid" ] || fail "uuid when started"
nbdsh -u "$uri" -c 'assert h.is_read_only()' || fail "not read-only"
# It waits for its resync: not promotable without --force.
[ "$(status_field "$ctl" resync)" != none ] || fail "no resync pending"
if "$REPLICACTL" --control "$ctl" promote 2>"$TMPD/err"; then
    fail "a demoted node awaiting its resync was promoted"
fi
grep -q resync "$TMPD/err" || { cat "$TMPD/err"; fail "promote message"; }
stop_nbdkit
[ "$(dump_field "$log" role)" = secondary ] || fail "role after restart"
echo "$0: OK"
