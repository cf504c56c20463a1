#!/usr/bin/env bash
# The link over TCP between two network namespaces' worth of network:
# the secondary listens inside a namespace of its own, reached through
# a veth pair; async mode with LZ4 compression, a stamped write storm.
# The link is taken down (ip link set down) for a few seconds, the
# replicator is killed meanwhile (its successor cannot connect until
# the link is back), then the link is restored: replication resumes,
# the lag drains, the volumes end byte-identical and crash-consistent.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
requires ip netns list
make_tmpdir
make_psk
NS=replica-$$
VP=rp$$
VS=rs$$
NET=198.$(( 18 + $$ % 2 )).$(( $$ / 2 % 250 )).   # RFC 2544: nobody's LAN
PORT=10809
ip netns add "$NS" || skip "cannot create a network namespace"
cleanup_fn "ip netns del $NS 2>/dev/null; ip link del $VP 2>/dev/null"
ip link add "$VP" type veth peer name "$VS"
ip link set "$VS" netns "$NS"
ip addr add "${NET}1/24" dev "$VP"
ip link set "$VP" up
ip netns exec "$NS" ip addr add "${NET}2/24" dev "$VS"
ip netns exec "$NS" ip link set "$VS" up
ip netns exec "$NS" ip link set lo up

BLOCKS=16384
truncate -s $((BLOCKS * 4096)) "$TMPD/pri.img" "$TMPD/sec.img"
sec_uri () {
    echo "nbds://replica@${NET}2:$PORT/?tls-psk-file=$TMPD/keys.psk"
}
# The secondary, inside the namespace ("ip netns exec" execs nbdkit, so
# the PID is nbdkit's).
spawn_nbdkit "$TMPD/sec.err" ip netns exec "$NS" nbdkit -f -p $PORT \
    -i "${NET}2" --tls=require --tls-psk="$TMPD/keys.psk" \
    --filter="$FILTER" file "$TMPD/sec.img" replica-role=secondary \
    replica-log="$TMPD/sec.log" replica-log-size=32M \
    replica-control="$TMPD/sec.ctl"
SEC_PID=$NBDKIT_PID
wait_control "$TMPD/sec.ctl"

start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-log-size=64M \
    replica-control="$TMPD/pri.ctl" replica-mode=async \
    replica-peer="nbds://replica@${NET}2:$PORT/" \
    replica-tls-psk="$TMPD/keys.psk" replica-compress=lz4
PRI_PID=$NBDKIT_PID
wait_field "$TMPD/pri.ctl" link replicating

$STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 8 --seconds 10 --strict 1 \
    > "$TMPD/stamp.out" 2>&1 &
writer=$!
register_pid $writer
sleep 1.5
ip link set "$VP" down
sleep 1
replicator_pid >/dev/null
kill -9 "$REPL_PID"
sleep 2.5
link=$(status_field "$TMPD/pri.ctl" link)
[ "$link" != replicating ] || fail "replicating over a link that is down"
[ "$(status_field "$TMPD/pri.ctl" lag_entries)" -gt 0 ] ||
    fail "no lag while the link is down"
ip link set "$VP" up
wait_field "$TMPD/pri.ctl" link replicating 30
wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "wait-synced"
same_volumes
# (the replicator reports its counters once a second)
for i in $(seq 1 50); do
    [ "$(status_field "$TMPD/pri.ctl" shipped_wire_bytes)" -gt 0 ] && break
    sleep 0.1
done
ratio=$(status_field "$TMPD/pri.ctl" compression_ratio)
/usr/bin/python3 -c "import sys; sys.exit(not $ratio > 2)" ||
    fail "compression_ratio is $ratio"
NBDKIT_PID=$PRI_PID
stop_nbdkit
"$REPLICACTL" --control "$TMPD/sec.ctl" promote
$STAMP check "$(sec_uri)" $BLOCKS "$TMPD/stamp.log" --mode async ||
    fail "not crash-consistent"
echo "$0: ok"
