#!/usr/bin/env bash
# Checksum initial sync of sparse volumes: zero blocks cross the link as
# zero records, never as data.  The primary's volume is a 1 GiB sparse
# file holding 16 MiB of random data in four extents, the rest holes;
# the secondary's is a 1 GiB sparse file, all zero except 8 MiB of
# random garbage in four extents where the primary has holes.  The
# secondary starts unpaired, on TCP 127.0.0.1 (TLS, PSK), behind a
# counting relay (tests/count-relay.py).  After the sync and wait-synced
# the files are byte-identical, and the link (both directions, measured
# by the relay) carried less than 16 MiB of data + 4 MiB of checksums
# (16 bytes per 4 KiB block) + 1 MiB: the garbage went away without its
# size in data crossing the link.  Exactly the 6144 blocks of data and
# garbage differed: the sums of holes equal those of zeros read.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires cmp --version
make_tmpdir
make_psk

BS=4096
BLOCKS=262144                   # 1 GiB
SIZE=$((BLOCKS * BS))
MIB=1048576
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"
# Extents, OFFSET:LENGTH in MiB.
PRI_DATA="16:4 200:4 513:4 1000:4"              # 16 MiB
SEC_GARBAGE="100:2 400:2 700:3 1020:1"          # 8 MiB, in the holes

# fill FILE SEED EXTENT...: seeded random data at each extent.
fill ()
{
    /usr/bin/python3 - "$@" <<'EOF'
import os, random, sys
path, seed = sys.argv[1], sys.argv[2]
rng = random.Random(seed)
fd = os.open(path, os.O_WRONLY)
for e in sys.argv[3:]:
    off, length = (int(x) * 1048576 for x in e.split(":"))
    os.pwrite(fd, rng.randbytes(length), off)
os.close(fd)
EOF
}

source "$SRCDIR/tests/sync-functions.sh"

truncate -s $SIZE "$TMPD/pri.img" "$TMPD/sec.img"
# shellcheck disable=SC2086
fill "$TMPD/pri.img" primary $PRI_DATA
# shellcheck disable=SC2086
fill "$TMPD/sec.img" garbage $SEC_GARBAGE
cmp -s "$TMPD/pri.img" "$TMPD/sec.img" && fail "the volumes are the same"
alloc () { echo $(( $(stat -c '%b * %B' "$1") )); }
echo "$0: allocated before: primary $(alloc "$TMPD/pri.img")," \
    "secondary $(alloc "$TMPD/sec.img") bytes"

start_tcp_secondary "$TMPD/sec.img"
start_relay "$TMPD/count.json"
start_tcp_primary "$TMPD/pri.img"
replicator_pid >/dev/null
wait_initial_sync 120

echo "$0: status: $(status_get "$TMPD/pri.ctl" sync_passes \
    sync_blocks_differing sync_total_bytes sync_sent_bytes)" \
    "(passes, blocks differing, total bytes, sent bytes; the secondary" \
    "seen inconsistent: $SAW_INCONSISTENT)"
[ "$(status_field "$TMPD/sec.ctl" state)" != inconsistent ] ||
    fail "the secondary is still inconsistent"
cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
    fail "the secondary's file differs from the primary's"
# Exactly the primary's data and the secondary's garbage differ: the sums
# of a hole (the secondary's are not read, nor hashed block by block:
# plugin/sums.c zero_sums) are those of zeros read (the primary's).
differing=$(status_field "$TMPD/pri.ctl" sync_blocks_differing)
[ "$differing" = $(((16 + 8) * MIB / BS)) ] ||
    fail "$differing blocks differed, not $(((16 + 8) * MIB / BS))" \
         "(16 MiB of data, 8 MiB of garbage): wrong sums of holes?"
echo "$0: allocated after: primary $(alloc "$TMPD/pri.img")," \
    "secondary $(alloc "$TMPD/sec.img") bytes"

stop_relay
wire=$(relay_total "$TMPD/count.json")
limit=$((16 * MIB + 4 * MIB + MIB))
echo "$0: the link carried $wire bytes ($(cat "$TMPD/count.json"));" \
    "limit $limit (16 MiB data + 4 MiB sums + 1 MiB); the garbage was" \
    "$((8 * MIB))"
[ "$wire" -lt "$limit" ] ||
    fail "$wire bytes crossed the link (>= $limit): zero blocks sent as data?"
[ "$wire" -ge $((16 * MIB)) ] ||
    fail "only $wire bytes crossed the link: the relay did not see the sync"
echo "$0: ok"
