#!/usr/bin/env bash
# The replication link is TLS and the secondary trusts only its primary:
#  - a client holding the secondary's TLS key but not the pair secret
#    cannot write to the replication export (tests/wire-inject.c);
#  - a primary with the wrong PSK never replicates;
#  - a plaintext peer is refused at startup without replica-insecure=yes,
#    and refused by a TLS-only secondary even with it; a secondary that
#    lets plaintext clients in (--tls=on) serves the replication export
#    over TLS only;
#  - X.509 is refused where libnbd would not check the certificate (a
#    Unix socket, no ca-cert.pem, no keys at all); an impostor whose
#    certificate another CA signed is never adopted; an x509 setup over
#    TCP replicates.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires certtool --version
make_tmpdir
make_psk
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"P" * 65536, 0)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30

# Injection with the TLS key only.
"$WIRE_INJECT" "nbds+unix://replica@/replica-replication?socket=$TMPD/sec.sock&tls-psk-file=$TMPD/keys.psk" ||
    fail "a client without the pair secret wrote to the replication export"
[ "$(status_field "$TMPD/sec.ctl" refused)" -ge 5 ] || fail "refused count"
same_volumes

# The wrong PSK: the handshake fails, nothing is replicated.
NBDKIT_PID=$PRI_PID
stop_nbdkit
make_psk "$TMPD/wrong.psk"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async \
    replica-tls-psk="$TMPD/wrong.psk"
sleep 3
[ "$(status_field "$TMPD/pri.ctl" link)" != replicating ] ||
    fail "replicating with the wrong PSK"
status_field "$TMPD/pri.ctl" link_error | grep -qiE "tls|handshake|psk" ||
    fail "link_error does not name the TLS failure: $(status_field "$TMPD/pri.ctl" link_error)"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"Q" * 4096, 0)'
sleep 0.5
sec_nbdsh -c 'assert h.pread(4096, 0) == b"P" * 4096' ||
    fail "a write reached the secondary over a wrong PSK"
NBDKIT_PID=$PRI_PID
stop_nbdkit

# Plaintext: refused at startup, and by the TLS-only secondary.
peer="nbd+unix:///?socket=$TMPD/sec.sock"
if run_nbdkit -f -U "$TMPD/x.sock" --filter="$FILTER" file "$TMPD/pri.img" \
       replica-log="$TMPD/pri.log" replica-peer="$peer" 2>"$TMPD/err"; then
    fail "a plaintext peer was accepted"
fi
grep -q "is a plaintext link" "$TMPD/err" || { cat "$TMPD/err"; fail "message"; }
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-control="$TMPD/pri.ctl" \
    replica-mode=async replica-peer="$peer" replica-insecure=yes
PRI_PID=$NBDKIT_PID
sleep 3
[ "$(status_field "$TMPD/pri.ctl" link)" != replicating ] ||
    fail "a TLS-only secondary accepted a plaintext link"
status_field "$TMPD/pri.ctl" link_error | grep -qiE "tls|starttls|encrypt|refus|handshake" ||
    fail "link_error does not name the refusal: $(status_field "$TMPD/pri.ctl" link_error)"
stop_nbdkit
NBDKIT_PID=$SEC_PID
stop_nbdkit

# A secondary whose nbdkit lets plaintext clients in (--tls=on) still
# serves its replication export over TLS only: a plaintext client
# cannot pair with it (tests/wire-inject.c --diverge pairs, then writes).
rm -f "$TMPD/sec.log"
start_nbdkit "$TMPD/sec.sock" "$TMPD/sec.err" --tls=on \
    --tls-psk="$TMPD/keys.psk" file "$TMPD/sec.img" replica-role=secondary \
    replica-log="$TMPD/sec.log" replica-log-size=16M \
    replica-control="$TMPD/sec.ctl"
if "$WIRE_INJECT" --diverge \
       "nbd+unix:///replica-replication?socket=$TMPD/sec.sock" \
       >"$TMPD/out" 2>&1; then
    fail "a plaintext client used the replication export"
fi
"$REPLICACTL" log-dump "$TMPD/sec.log" | grep -q "^flags.*paired" &&
    fail "a plaintext client paired with the secondary"
grep -q "refused a plaintext connection" "$TMPD/sec.err" ||
    { cat "$TMPD/out" "$TMPD/sec.err"; fail "no reason logged"; }
stop_nbdkit

# x509: a CA, a server and a client certificate.
mkdir -p "$TMPD/ca" "$TMPD/srv" "$TMPD/cli"
(
    cd "$TMPD/ca"
    certtool --generate-privkey --outfile ca-key.pem 2>/dev/null
    printf 'cn = Test CA\nca\ncert_signing_key\nexpiration_days = 2\n' > ca.info
    certtool --generate-self-signed --load-privkey ca-key.pem \
        --template ca.info --outfile ca-cert.pem 2>/dev/null
    for who in srv cli; do
        certtool --generate-privkey --outfile "../$who/key.pem" 2>/dev/null
        if [ $who = srv ]; then
            printf 'cn = localhost\ndns_name = localhost\ntls_www_server\n'
        else
            printf 'cn = replicator\ntls_www_client\n'
        fi > $who.info
        printf 'encryption_key\nsigning_key\nexpiration_days = 2\n' >> $who.info
        certtool --generate-certificate --load-ca-certificate ca-cert.pem \
            --load-ca-privkey ca-key.pem --load-privkey "../$who/key.pem" \
            --template $who.info --outfile "../$who/cert.pem" 2>/dev/null
        cp ca-cert.pem "../$who/ca-cert.pem"
    done
    mv ../srv/key.pem ../srv/server-key.pem; mv ../srv/cert.pem ../srv/server-cert.pem
    mv ../cli/key.pem ../cli/client-key.pem; mv ../cli/cert.pem ../cli/client-cert.pem
)
# A second CA, unrelated: an impostor's server certificate for localhost.
mkdir -p "$TMPD/evilca" "$TMPD/evil"
(
    cd "$TMPD/evilca"
    certtool --generate-privkey --outfile ca-key.pem 2>/dev/null
    printf 'cn = Evil CA\nca\ncert_signing_key\nexpiration_days = 2\n' > ca.info
    certtool --generate-self-signed --load-privkey ca-key.pem \
        --template ca.info --outfile ca-cert.pem 2>/dev/null
    certtool --generate-privkey --outfile ../evil/server-key.pem 2>/dev/null
    printf 'cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' > srv.info
    certtool --generate-certificate --load-ca-certificate ca-cert.pem \
        --load-ca-privkey ca-key.pem --load-privkey ../evil/server-key.pem \
        --template srv.info --outfile ../evil/server-cert.pem 2>/dev/null
    cp ca-cert.pem ../evil/ca-cert.pem
)

# X.509 is checked by libnbd only against a host name and with a CA
# file: refused at startup over a Unix socket, without DIR/ca-cert.pem,
# and with neither a PSK nor certificates.
mkdir -p "$TMPD/noca"
cp "$TMPD/cli/client-key.pem" "$TMPD/cli/client-cert.pem" "$TMPD/noca/"
expect_fail x509-unix "X.509 needs a TCP peer" \
    file "$TMPD/pri.img" replica-log="$TMPD/x.log" \
    replica-peer="nbds+unix:///?socket=$TMPD/sec.sock" \
    replica-tls-certificates="$TMPD/cli"
expect_fail x509-no-ca "ca-cert.pem" \
    file "$TMPD/pri.img" replica-log="$TMPD/x.log" \
    replica-peer="nbds://localhost:10809/" \
    replica-tls-certificates="$TMPD/noca"
expect_fail tls-no-keys "needs a PSK or X.509 certificates" \
    file "$TMPD/pri.img" replica-log="$TMPD/x.log" \
    replica-peer="nbds://localhost:10809/"

# start_x509_secondary DIR [OPTION...]: a secondary on TCP serving the
# certificate of DIR; sets SEC_PID, PORT.
start_x509_secondary ()
{
    local dir=$1
    shift
    PORT=$(free_port)
    spawn_nbdkit "$TMPD/sec.err" nbdkit -f -p "$PORT" -i 127.0.0.1 \
        --tls=require --tls-certificates="$dir" "$@" --filter="$FILTER" \
        file "$TMPD/sec.img" replica-role=secondary \
        replica-log="$TMPD/sec.log" replica-log-size=16M \
        replica-control="$TMPD/sec.ctl"
    SEC_PID=$NBDKIT_PID
    wait_control "$TMPD/sec.ctl"
}
start_x509_primary ()
{
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
        replica-log="$TMPD/pri.log" replica-log-size=16M \
        replica-control="$TMPD/pri.ctl" \
        replica-peer="nbds://localhost:$PORT/" \
        replica-tls-certificates="$TMPD/cli"
    PRI_PID=$NBDKIT_PID
}

# An impostor (a certificate of another CA) is never adopted: it gets
# neither the pair secret nor the volume (libnbd's check, which the
# refusals above make sure applies).
rm -f "$TMPD"/*.log
truncate -s 0 "$TMPD/sec.img"; truncate -s 64M "$TMPD/sec.img"
cp "$TMPD/sec.img" "$TMPD/pri.img"
start_x509_secondary "$TMPD/evil"
start_x509_primary
sleep 3
[ "$(status_field "$TMPD/pri.ctl" link)" != replicating ] ||
    fail "replicating to a secondary whose certificate another CA signed"
status_field "$TMPD/pri.ctl" link_error | grep -qiE "tls|certificate|handshake|verif" ||
    fail "link_error does not name the certificate: $(status_field "$TMPD/pri.ctl" link_error)"
"$REPLICACTL" log-dump "$TMPD/sec.log" | grep -q "^flags.*paired" &&
    fail "the impostor was paired"
stop_pair

# The right certificate (and the secondary checks ours): replicates.
rm -f "$TMPD"/*.log
start_x509_secondary "$TMPD/srv" --tls-verify-peer
start_x509_primary
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c '
import os
for i in range(64):
    h.pwrite(os.urandom(65536), i * 1048576)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
nbdcopy "$(pri_uri)" "$TMPD/a"
nbdcopy "nbds://localhost:$PORT/?tls-certificates=$TMPD/cli" "$TMPD/b"
cmp "$TMPD/a" "$TMPD/b" || fail "x509: volumes differ"
echo "$0: ok"
