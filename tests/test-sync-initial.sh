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

free_port ()
{
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The secondary on TCP (start_secondary serves a Unix socket).
SEC_PORT=$(free_port)
sec_uri () {
    echo "nbds://replica@127.0.0.1:$SEC_PORT/?tls-psk-file=$TMPD/keys.psk"
}
start_tcp_secondary ()
{
    local i
    (
        [ -n "$NBDKIT_PRELOAD" ] && export LD_PRELOAD="$NBDKIT_PRELOAD"
        exec nbdkit -f -p "$SEC_PORT" -i 127.0.0.1 \
            --tls=require --tls-psk="$TMPD/keys.psk" --filter="$FILTER" \
            file "$1" replica-role=secondary replica-log="$TMPD/sec.log" \
            replica-log-size=64M replica-control="$TMPD/sec.ctl"
    ) 2>>"$TMPD/sec.err" &
    SEC_PID=$!
    register_pid $SEC_PID
    for i in $(seq 1 300); do
        nbdinfo --size "$(sec_uri)" >/dev/null 2>&1 && return 0
        kill -0 $SEC_PID 2>/dev/null ||
            { cat "$TMPD/sec.err" >&2; fail "the secondary exited"; }
        sleep 0.1
    done
    fail "the secondary did not start within 30 s"
}

# start_relay COUNTFILE: the counting relay to the secondary; sets
# RELAY_PID and RELAY_PORT.
start_relay ()
{
    local i
    rm -f "$1"
    $RELAY 0 127.0.0.1 "$SEC_PORT" "$1" > "$TMPD/relay.out" \
        2>>"$TMPD/relay.err" &
    RELAY_PID=$!
    register_pid $RELAY_PID
    for i in $(seq 1 100); do
        grep -q '^ready' "$TMPD/relay.out" && break
        kill -0 $RELAY_PID 2>/dev/null ||
            { cat "$TMPD/relay.err" >&2; fail "the relay exited"; }
        sleep 0.1
    done
    RELAY_PORT=$(awk '/^ready/ { print $2 }' "$TMPD/relay.out")
    [ -n "$RELAY_PORT" ] || fail "the relay did not start"
}

# stop_relay COUNTFILE: SIGTERM, then the final counts are in COUNTFILE.
stop_relay ()
{
    kill -TERM $RELAY_PID
    wait $RELAY_PID || fail "the relay failed"
}

# relay_total COUNTFILE: bytes both ways.
relay_total ()
{
    /usr/bin/python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(c["up"] + c["down"])' "$1"
}

start_tcp_primary ()
{
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" \
        file "$1" replica-log="$TMPD/pri.log" replica-log-size=64M \
        replica-control="$TMPD/pri.ctl" replica-mode=sync \
        replica-peer="nbds://replica@127.0.0.1:$RELAY_PORT/" \
        replica-tls-psk="$TMPD/keys.psk"
    PRI_PID=$NBDKIT_PID
}

# status_get CTL KEY...: the values, space-separated, from one status.
status_get ()
{
    local ctl=$1
    shift
    "$REPLICACTL" --control "$ctl" status --json |
        /usr/bin/python3 -c '
import json, sys
o = json.load(sys.stdin)
print(" ".join(str(o.get(k)) for k in sys.argv[1:]))' "$@"
}

# wait_initial_sync SECONDS [STAMPLOG]: until the primary's sync phase
# is over (back to "none" after at least one pass) and wait-synced
# returns.  Sets SAW_SYNC (a status showed the primary in initial-sync),
# SAW_INCONSISTENT (the secondary's state "inconsistent"), and, with
# STAMPLOG, ACKED_IN_SYNC: the writes acknowledged while the primary
# was seen still in initial-sync.
wait_initial_sync ()
{
    local secs=$1 stamplog=${2:-} end=$((SECONDS + $1)) phase passes st
    SAW_SYNC=0 SAW_INCONSISTENT=0 ACKED_IN_SYNC=0
    while [ $SECONDS -lt $end ]; do
        kill -0 $PRI_PID 2>/dev/null ||
            { cat "$TMPD/pri.err" >&2; fail "the primary exited"; }
        kill -0 $SEC_PID 2>/dev/null ||
            { cat "$TMPD/sec.err" >&2; fail "the secondary exited"; }
        read -r phase passes < <(status_get "$TMPD/pri.ctl" \
                                     sync_phase sync_passes || true)
        st=$(status_get "$TMPD/sec.ctl" state 2>/dev/null || true)
        [ "$st" = inconsistent ] && SAW_INCONSISTENT=1
        if [ "$phase" = initial-sync ]; then
            SAW_SYNC=1
            if [ -n "$stamplog" ]; then
                ACKED_IN_SYNC=$(grep -c '^A' "$stamplog" || true)
            fi
        fi
        if [ "$phase" = none ] && [ "${passes:-0}" != None ] &&
               [ "${passes:-0}" -ge 1 ]; then
            "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced \
                --timeout 120 || fail "wait-synced"
            # wait-synced may not know about the sync phase: the
            # phase must still be over.
            [ "$(status_field "$TMPD/pri.ctl" sync_phase)" = none ] ||
                fail "sync_phase is not none after wait-synced"
            return 0
        fi
        sleep 0.2
    done
    "$REPLICACTL" --control "$TMPD/pri.ctl" status >&2 || true
    "$REPLICACTL" --control "$TMPD/sec.ctl" status >&2 || true
    fail "the initial sync did not end within $secs s"
}

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
$STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 16 --seconds 6 \
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
