#!/usr/bin/env bash
# A plugin that declares I/O size rules (here nbdkit's blocksize-policy
# filter under ours, minimum 4096) on the secondary: the replication
# connection is not held to them (the filter answers it, and libnbd
# enforces a server's minimum on its own side, refusing the replicator's
# 48-byte sums read of the last chunk and its batch writes).  An initial
# sync of a volume of 16 MiB + 12 KiB ends byte-identical, and a verify
# (its one-block checks read 16 bytes) finds the volumes equal; a client
# of the secondary still sees the plugin's minimum.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires cmp --version
make_tmpdir
make_psk
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"
source "$SRCDIR/tests/sync-functions.sh"

SIZE=$((16 * 1048576 + 12288))
truncate -s $SIZE "$TMPD/pri.img" "$TMPD/sec.img"
head -c $SIZE /dev/urandom | dd of="$TMPD/pri.img" conv=notrunc status=none

start_tcp_secondary "$TMPD/sec.img" --filter=blocksize-policy \
    -- blocksize-minimum=4096 blocksize-error-policy=error
start_relay "$TMPD/count.json"
start_tcp_primary "$TMPD/pri.img"
replicator_pid >/dev/null
wait_initial_sync 60
cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
    fail "the secondary's file differs from the primary's"
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 60 ||
    { tail -20 "$TMPD/pri.err"; fail "verify failed"; }
[ "$(status_field "$TMPD/pri.ctl" verify_mismatched_blocks)" = 0 ] ||
    fail "verify found differences"
grep -q 'unaligned' "$TMPD/pri.err" && fail "requests refused as unaligned"
min=$(nbdinfo --json "$(sec_uri)" 2>/dev/null |
          /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0].get("block_size_minimum"))' ||
          true)
echo "$0: a client of the secondary sees block_size_minimum $min"
[ "$min" = 4096 ] || fail "a client of the secondary sees minimum $min, not 4096"
stop_relay
echo "$0: ok"
