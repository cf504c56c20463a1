#!/usr/bin/env bash
# Checksum initial sync (replica-initial-sync=checksum, the default) of a
# secondary that starts unpaired with a disk that is almost the
# primary's.  The primary's volume is 1 GiB of random data; the
# secondary's file is a copy of it in which 1% of the 4 KiB blocks
# (2621, scattered, seeded) hold other random data.  The secondary
# listens on TCP 127.0.0.1 (TLS, PSK); the primary's replica-peer is a
# counting relay in front of it (tests/count-relay.py), which measures
# the link from outside the product.
#  1. No client writes: after the sync and wait-synced the two files are
#     byte-identical, at most 3% of the volume crossed the link (both
#     directions), status reports the pass and 2621..2700 differing
#     blocks, and the secondary is no longer inconsistent.
#  2. Again with a fresh secondary log and another 1% of blocks changed,
#     while a stamped write storm (tests/stamp.py) writes to the primary
#     during the sync: the files end byte-identical.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires openssl version
requires cmp --version
make_tmpdir
make_psk

BS=4096
BLOCKS=262144                   # 1 GiB
NDIFF=2621                      # 1% of the blocks
SIZE=$((BLOCKS * BS))
RELAY="/usr/bin/python3 $SRCDIR/tests/count-relay.py"

# random_file FILE SEED: SIZE bytes of seeded random data (AES-CTR).
random_file ()
{
    head -c "$SIZE" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$2" > "$1"
    [ "$(stat -c %s "$1")" = "$SIZE" ] || fail "cannot make $1"
}

# scramble FILE SEED COUNT: overwrite COUNT distinct random 4 KiB blocks
# (seeded) with other random data.
scramble ()
{
    /usr/bin/python3 - "$@" $BLOCKS <<'EOF'
import os, random, sys
path, seed, count, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4])
rng = random.Random(seed)
fd = os.open(path, os.O_RDWR)
for b in rng.sample(range(blocks), count):
    new = rng.randbytes(4096)
    assert new != os.pread(fd, 4096, b * 4096)
    os.pwrite(fd, new, b * 4096)
os.close(fd)
EOF
}

source "$SRCDIR/tests/sync-functions.sh"

# --------------------------------------------------------------- part 1

random_file "$TMPD/pri.img" "primary-$SIZE"
cp "$TMPD/pri.img" "$TMPD/sec.img"
scramble "$TMPD/sec.img" sec-1 $NDIFF

start_tcp_secondary "$TMPD/sec.img"
start_relay "$TMPD/count1.json"
t0=$(date +%s.%N)
start_tcp_primary "$TMPD/pri.img"
replicator_pid >/dev/null
wait_initial_sync 120
t1=$(date +%s.%N)

read -r passes differing total sent initial <<<"$(status_get "$TMPD/pri.ctl" \
    sync_passes sync_blocks_differing sync_total_bytes sync_sent_bytes \
    initial_sync)"
echo "$0: part 1: initial sync in $(awk -v a="$t0" -v b="$t1" \
    'BEGIN { printf "%.1f", b - a }') s: passes $passes, blocks differing" \
    "$differing, total $total, sent $sent, initial_sync $initial" \
    "(secondary seen inconsistent: $SAW_INCONSISTENT)"
[ "$passes" -ge 1 ] || fail "sync_passes is $passes"
[ "$differing" -ge $NDIFF ] && [ "$differing" -le 2700 ] ||
    fail "sync_blocks_differing is $differing, not $NDIFF..2700"
st=$(status_field "$TMPD/sec.ctl" state)
[ "$st" != inconsistent ] || fail "the secondary is still inconsistent"
cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
    fail "the secondary's file differs from the primary's"

stop_relay
wire=$(relay_total "$TMPD/count1.json")
limit=$((SIZE * 3 / 100))
echo "$0: part 1: the link carried $wire bytes ($(cat "$TMPD/count1.json"))," \
    "$(awk -v w="$wire" -v s="$SIZE" 'BEGIN { printf "%.2f", 100 * w / s }')%" \
    "of the volume (limit 3%: $limit)"
[ "$wire" -le "$limit" ] || fail "$wire bytes crossed the link (> $limit)"
[ "$wire" -gt $((NDIFF * BS)) ] ||
    fail "only $wire bytes crossed the link: the relay did not see the sync"

NBDKIT_PID=$PRI_PID
stop_nbdkit
NBDKIT_PID=$SEC_PID
stop_nbdkit

# --------------------------------------------------------------- part 2
# A new secondary (fresh log) with another 1% changed; the primary keeps
# its log.  A write storm over the whole volume during the sync.

cp "$TMPD/pri.img" "$TMPD/sec.img"
scramble "$TMPD/sec.img" sec-2 $NDIFF
cmp -s "$TMPD/pri.img" "$TMPD/sec.img" && fail "the new secondary is the same"
rm -f "$TMPD/sec.log" "$TMPD/sec.err"
start_tcp_secondary "$TMPD/sec.img"
start_relay "$TMPD/count2.json"
start_tcp_primary "$TMPD/pri.img"
$STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 16 --seconds 6 --strict 1 \
    > "$TMPD/stamp.out" 2>&1 &
writer=$!
register_pid $writer
replicator_pid >/dev/null
wait_initial_sync 120 "$TMPD/stamp.log"
wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
acks=$(grep -c '^A' "$TMPD/stamp.log" || true)
echo "$0: part 2: $acks writes acknowledged, $ACKED_IN_SYNC of them seen" \
    "while the primary was in initial-sync;" \
    "$(status_get "$TMPD/pri.ctl" sync_passes sync_blocks_differing)" \
    "(passes, blocks differing)"
[ "$SAW_SYNC" = 1 ] && [ "$ACKED_IN_SYNC" -gt 0 ] ||
    fail "no write was acknowledged during the initial sync (the sync" \
         "ended before the storm began?)"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120 ||
    fail "wait-synced after the storm"
[ "$(status_field "$TMPD/pri.ctl" sync_phase)" = none ] ||
    fail "sync_phase is not none after the storm"
[ "$(status_field "$TMPD/sec.ctl" state)" != inconsistent ] ||
    fail "the secondary is still inconsistent"
cmp "$TMPD/pri.img" "$TMPD/sec.img" ||
    fail "after a write storm during the sync, the secondary differs"
stop_relay
echo "$0: part 2: the link carried $(relay_total "$TMPD/count2.json") bytes"
echo "$0: ok"
