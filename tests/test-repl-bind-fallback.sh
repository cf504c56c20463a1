#!/usr/bin/env bash
# A peer name of two addresses, the first of which drops every packet,
# with replica-bind and then without it: the replicator gives each
# address its own time (DIAL_ADDR_TIMEOUT_MS), so it reaches the second
# and replicates (one deadline for the whole connect used to expire on
# the first address, and each retry tried it first again: the link
# never came up).
#
# Two network namespaces joined by a veth pair: the primary's (PNS,
# .1) and the secondary's (SNS, .3).  In PNS the name "peerhost" lists
# .2 then .3 (/etc/netns/PNS/hosts, which "ip netns exec" mounts over
# /etc/hosts), and .2 has a static neighbour entry with a MAC address
# nobody has: a SYN to it is sent and never answered.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
requires ip netns list
make_tmpdir
make_psk
PNS=replica-p$$
SNS=replica-s$$
NET=10.$(( $$ % 200 + 20 )).$(( $$ / 200 % 250 )).
PORT=10809
ip netns add "$PNS" || skip "cannot create a network namespace"
cleanup_fn "ip netns del $PNS 2>/dev/null; rm -rf /etc/netns/$PNS"
ip netns add "$SNS"
cleanup_fn "ip netns del $SNS 2>/dev/null"
ip -n "$PNS" link add vp type veth peer name vs netns "$SNS"
ip -n "$PNS" addr add "${NET}1/24" dev vp
ip -n "$SNS" addr add "${NET}3/24" dev vs
ip -n "$PNS" link set vp up
ip -n "$SNS" link set vs up
ip -n "$PNS" link set lo up
ip -n "$SNS" link set lo up
ip -n "$PNS" neigh add "${NET}2" lladdr 02:00:00:00:00:99 dev vp nud permanent
mkdir -p "/etc/netns/$PNS"
printf '127.0.0.1 localhost\n%s peerhost\n%s peerhost\n' "${NET}2" "${NET}3" \
    >"/etc/netns/$PNS/hosts"
order=$(ip netns exec "$PNS" getent ahostsv4 peerhost | awk '$2 == "STREAM" { print $1 }' | tr '\n' ' ')
echo "peerhost in $PNS: $order"
requires_env test "$order" = "${NET}2 ${NET}3 "  # the resolver's order

truncate -s 16M "$TMPD/pri.img" "$TMPD/sec.img"
# ("ip netns exec" execs nbdkit: the PIDs are nbdkit's.)
spawn_nbdkit "$TMPD/sec.err" ip netns exec "$SNS" nbdkit -f -p $PORT \
    -i "${NET}3" --tls=require --tls-psk="$TMPD/keys.psk" \
    --filter="$FILTER" file "$TMPD/sec.img" replica-role=secondary \
    replica-log="$TMPD/sec.log" replica-log-size=16M \
    replica-control="$TMPD/sec.ctl"
SEC_PID=$NBDKIT_PID
wait_control "$TMPD/sec.ctl"

rm -f "$TMPD/pri.sock"
spawn_nbdkit "$TMPD/pri.err" ip netns exec "$PNS" nbdkit -f \
    -U "$TMPD/pri.sock" --filter="$FILTER" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-log-size=16M \
    replica-control="$TMPD/pri.ctl" replica-mode=async \
    replica-peer="nbds://replica@peerhost:$PORT/" \
    replica-tls-psk="$TMPD/keys.psk" replica-bind="${NET}1"
PRI_PID=$NBDKIT_PID
wait_control "$TMPD/pri.ctl"
replicator_pid >/dev/null
if ! wait_field "$TMPD/pri.ctl" link replicating 30; then
    cat "$TMPD/pri.err"
    fail "the link did not come up through the second address"
fi
grep -q "connect to ${NET}2 port $PORT from ${NET}1 timed out" "$TMPD/pri.err" ||
    { cat "$TMPD/pri.err"; fail "the first address's timeout was not logged"; }
nbdsh -u "nbd+unix:///?socket=$TMPD/pri.sock" \
    -c 'h.pwrite(b"B" * 65536, 0)' || fail "the write"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "not synced"
NBDKIT_PID=$PRI_PID stop_nbdkit

# Without replica-bind the same: a TCP peer with a PSK is dialled an
# address at a time too (libnbd's own connect would spend the whole
# connect deadline on the first address, every time).  Both families
# are asked for now.
order=$(ip netns exec "$PNS" getent ahosts peerhost | awk '$2 == "STREAM" { print $1 }' | tr '\n' ' ')
echo "peerhost in $PNS, any family: $order"
requires_env test "$order" = "${NET}2 ${NET}3 "
rm -f "$TMPD/pri.sock"
spawn_nbdkit "$TMPD/pri2.err" ip netns exec "$PNS" nbdkit -f \
    -U "$TMPD/pri.sock" --filter="$FILTER" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-control="$TMPD/pri.ctl" \
    replica-mode=async replica-peer="nbds://replica@peerhost:$PORT/" \
    replica-tls-psk="$TMPD/keys.psk"
PRI_PID=$NBDKIT_PID
wait_control "$TMPD/pri.ctl"
replicator_pid >/dev/null
if ! wait_field "$TMPD/pri.ctl" link replicating 30; then
    cat "$TMPD/pri2.err"
    fail "without replica-bind, the link did not come up through the" \
         "second address"
fi
grep -q "connect to ${NET}2 port $PORT timed out" "$TMPD/pri2.err" ||
    { cat "$TMPD/pri2.err"; fail "without replica-bind, the first" \
                                 "address's timeout was not logged"; }
nbdsh -u "nbd+unix:///?socket=$TMPD/pri.sock" \
    -c 'h.pwrite(b"C" * 65536, 65536)' || fail "the second write"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "not synced without replica-bind"
NBDKIT_PID=$PRI_PID stop_nbdkit
NBDKIT_PID=$SEC_PID stop_nbdkit
cmp "$TMPD/pri.img" "$TMPD/sec.img" || fail "the volumes differ"
echo PASS
