#!/usr/bin/env bash
# The secondary's read-ahead during a checksum sync (plugin/volread.c
# volume_prefetch).  A 256 MiB volume of random data; the secondary a
# copy with 64 blocks changed; the secondary's nbdkit runs with -v, so
# that every plugin call shows in its log.
#  1. The file plugin: the secondary asks it to cache the range after
#     each sums read (NBD_CMD_CACHE, posix_fadvise) throughout the pass,
#     and never turns that off.
#  2. The same plugin under nbdkit's delay filter (delay-cache=50ms): a
#     native cache that takes 50 ms a call, as one that reads
#     synchronously would.  After four slow calls in a row the
#     secondary says "no more prefetching" and asks no more.
# Both syncs end byte-identical.  What this can catch: a prefetch never
# issued, one outside the volume (nbdkit's backend asserts the range:
# the secondary dies, and the sync with it), or a slow cache that keeps
# being asked.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires openssl version
requires cmp --version
requires test -f "$(nbdkit --dump-config | sed -n 's/^filterdir=//p')/nbdkit-delay-filter.so"
make_tmpdir
make_psk

BS=4096
BLOCKS=65536                    # 256 MiB: 16 chunks of the walk
SIZE=$((BLOCKS * BS))
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"

source "$SRCDIR/tests/sync-functions.sh"

head -c "$SIZE" /dev/zero |
    openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:prefetch \
    > "$TMPD/pri.img"
[ "$(stat -c %s "$TMPD/pri.img")" = "$SIZE" ] || fail "cannot make pri.img"

# new_secondary: a copy of the primary with 64 blocks changed, fresh log.
new_secondary ()
{
    cp "$TMPD/pri.img" "$TMPD/sec.img"
    /usr/bin/python3 - "$TMPD/sec.img" $BLOCKS <<'EOF'
import os, random, sys
rng = random.Random(sys.argv[1])
fd = os.open(sys.argv[1], os.O_RDWR)
for b in rng.sample(range(int(sys.argv[2])), 64):
    os.pwrite(fd, rng.randbytes(4096), b * 4096)
os.close(fd)
EOF
    cmp -s "$TMPD/pri.img" "$TMPD/sec.img" && fail "the secondary is the same"
    rm -f "$TMPD/sec.log" "$TMPD/pri.log" "$TMPD/sec.err"
}

# sync_once LABEL OPTION... [-- KEY=VALUE...]: one initial sync with the
# secondary started with those arguments; then both stopped.
sync_once ()
{
    local label=$1
    shift
    new_secondary
    start_tcp_secondary "$TMPD/sec.img" -v "$@"
    start_relay "$TMPD/count-$label.json"
    start_tcp_primary "$TMPD/pri.img"
    replicator_pid >/dev/null
    wait_initial_sync 120
    cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
        fail "$label: the secondary's file differs from the primary's"
    stop_relay
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    NBDKIT_PID=$SEC_PID
    stop_nbdkit
    cp "$TMPD/sec.err" "$TMPD/sec-$label.err"
}

# The plugin's cache calls in a secondary's log.
caches () { grep -c 'file: cache count=' "$1" || true; }

sync_once plain
n=$(caches "$TMPD/sec-plain.err")
echo "$0: plain file plugin: $n cache calls"
[ "$n" -ge 8 ] || fail "only $n cache calls in a pass over 16 chunks"
! grep -q 'no more prefetching' "$TMPD/sec-plain.err" ||
    fail "prefetching turned off on the file plugin"

sync_once slow --filter=delay -- delay-cache=50ms
n=$(caches "$TMPD/sec-slow.err")
echo "$0: cache delayed 50 ms: $n cache calls;" \
    "$(grep -o 'replica: the plugin.s cache took.*' "$TMPD/sec-slow.err")"
grep -q 'no more prefetching' "$TMPD/sec-slow.err" ||
    fail "a slow cache did not turn prefetching off"
# Four in a row, then none: the secondary serves one sums read at a time
# (plugin/sums.c), although the primary asks for several ahead.
[ "$n" -eq 4 ] ||
    fail "$n cache calls with a slow cache (expected 4)"
echo "$0: ok"
