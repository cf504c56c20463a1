#!/usr/bin/env bash
# --bind: the replicator connects to a TCP peer from a chosen local
# address.  A secondary listens on 127.0.0.1:PORT; the primary's
# replicator (external, run by hand) binds to 127.0.0.2: the volumes
# end byte-identical, and the established connection to PORT has the
# local address 127.0.0.2.  Then --bind with an address this host does
# not have (192.0.2.1, TEST-NET-1): the replicator keeps running and
# the filter shows the bind error as link_error.  Then the PSK file
# named in the URI's query instead of --tls-psk.  Last, the startup
# refusals: --bind with a Unix-socket peer, with TLS but no PSK, and
# with a host name for an address.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires ss -V
make_tmpdir
make_psk
truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"

PORT=
sec_uri () {
    echo "nbds://replica@127.0.0.1:$PORT/?tls-psk-file=$TMPD/keys.psk"
}

# The secondary on TCP 127.0.0.1, on a port found free (another test
# run may hold one: try a few).
for try in $(seq 1 10); do
    PORT=$((20000 + RANDOM % 20000))
    [ -z "$(ss -Htln "sport = :$PORT")" ] || continue
    (
        [ -n "$NBDKIT_PRELOAD" ] && export LD_PRELOAD="$NBDKIT_PRELOAD"
        exec nbdkit -f -p "$PORT" -i 127.0.0.1 \
            --tls=require --tls-psk="$TMPD/keys.psk" --filter="$FILTER" \
            file "$TMPD/sec.img" replica-role=secondary \
            replica-log="$TMPD/sec.log" replica-log-size=16M \
            replica-control="$TMPD/sec.ctl"
    ) 2>>"$TMPD/sec.err" &
    SEC_PID=$!
    register_pid $SEC_PID
    for i in $(seq 1 100); do
        nbdinfo --size "$(sec_uri)" >/dev/null 2>&1 && break 2
        kill -0 $SEC_PID 2>/dev/null || break
        sleep 0.1
    done
    kill -9 $SEC_PID 2>/dev/null || true
    wait $SEC_PID 2>/dev/null || true
    SEC_PID=
done
[ -n "$SEC_PID" ] || { cat "$TMPD/sec.err" >&2; fail "no secondary on TCP"; }

start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-log-size=16M \
    replica-control="$TMPD/pri.ctl" replica-replicator=external \
    replica-mode=async
PRI_PID=$NBDKIT_PID
wait_field "$TMPD/pri.ctl" link connecting

# start_replicator BIND PEER [ARGS...]: the external replicator to the
# secondary PEER, from BIND; sets REPL_PID.
start_replicator ()
{
    local bind=$1 peer=$2
    shift 2
    "$REPLICATOR" --control "$TMPD/pri.ctl" --peer "$peer" \
        --bind "$bind" "$@" 2>>"$TMPD/repl.err" &
    REPL_PID=$!
    register_pid $REPL_PID
}
stop_replicator ()
{
    kill -9 "$REPL_PID" 2>/dev/null || true
    wait "$REPL_PID" 2>/dev/null || true
}

PEER="nbds://replica@127.0.0.1:$PORT/"

# --- From 127.0.0.2.
start_replicator 127.0.0.2 "$PEER" --tls-psk "$TMPD/keys.psk"
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c '
import os
for i in range(32):
    h.pwrite(os.urandom(65536), i * 1048576 + i * 4096)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes

# The replicator's connection to PORT (ss -p names its process).
conns=$(ss -Htnp state established "( dport = :$PORT )")
mine=$(grep -F "pid=$REPL_PID," <<<"$conns" || true)
[ -n "$mine" ] ||
    { echo "$conns" >&2; fail "no connection of the replicator to $PORT"; }
# Columns without a State column: Recv-Q Send-Q Local Peer Process.
locals=$(awk '{ print $3 }' <<<"$mine" | sed 's/:[0-9]*$//' | sort -u)
[ "$locals" = 127.0.0.2 ] ||
    { echo "$mine" >&2; fail "the link's local address: '$locals'"; }
stop_replicator

# --- From an address this host does not have: a link error, no exit.
start_replicator 192.0.2.1 "$PEER" --tls-psk "$TMPD/keys.psk"
err=
for i in $(seq 1 150); do
    err=$(status_field "$TMPD/pri.ctl" link_error 2>/dev/null || true)
    grep -q "bind to 192.0.2.1: Cannot assign requested address" <<<"$err" &&
        break
    sleep 0.1
done
grep -q "bind to 192.0.2.1: Cannot assign requested address" <<<"$err" ||
    { cat "$TMPD/repl.err" >&2; fail "link_error: '$err'"; }
sleep 1
kill -0 "$REPL_PID" 2>/dev/null || fail "the replicator exited on a bind error"
[ "$(status_field "$TMPD/pri.ctl" link)" != replicating ] ||
    fail "replicating from an address this host does not have"
stop_replicator

# --- The PSK file and user named in the URI (what nbd_connect_uri
# would take from it), no --tls-psk.
start_replicator 127.0.0.2 "$PEER?tls-psk-file=$TMPD/keys.psk" --debug
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"Q" * 65536, 5 * 1048576)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
grep -q "connected to 127.0.0.1 port $PORT from 127.0.0.2" "$TMPD/repl.err" ||
    fail "the URI's PSK: not connected from 127.0.0.2"
stop_replicator

# --- Startup refusals (exit 1, one line naming the problem).
if "$REPLICATOR" --control "$TMPD/pri.ctl" --bind 127.0.0.2 \
       --peer "nbds+unix://replica@/?socket=$TMPD/sec.sock" \
       --tls-psk "$TMPD/keys.psk" 2>"$TMPD/err"; then
    fail "--bind with a Unix-socket peer was accepted"
fi
grep -q -- "--bind: applies to TCP peers" "$TMPD/err" ||
    { cat "$TMPD/err" >&2; fail "message for a Unix-socket peer"; }
mkdir -p "$TMPD/certs"
touch "$TMPD/certs/ca-cert.pem"
if "$REPLICATOR" --control "$TMPD/pri.ctl" --bind 127.0.0.2 \
       --peer "nbds://127.0.0.1:$PORT/" --tls-certificates "$TMPD/certs" \
       2>"$TMPD/err"; then
    fail "--bind with X.509 TLS was accepted"
fi
grep -q -- "--bind with TLS needs a PSK" "$TMPD/err" ||
    { cat "$TMPD/err" >&2; fail "message for --bind without a PSK"; }
if "$REPLICATOR" --control "$TMPD/pri.ctl" --bind not-an-address \
       --peer "nbds://127.0.0.1:$PORT/" --tls-psk "$TMPD/keys.psk" \
       2>"$TMPD/err"; then
    fail "--bind with a host name was accepted"
fi
grep -q "not a numeric IPv4 or IPv6 address" "$TMPD/err" ||
    { cat "$TMPD/err" >&2; fail "message for a bad --bind address"; }
echo "$0: ok"
