#!/usr/bin/env bash
# nbd-replica: configuration and log problems stop nbdkit at startup
# with a non-zero exit and one clear error line naming the key or the
# problem; nothing is served and no stray log file is created.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

truncate -s 64M "$TMPD/disk64.img"
truncate -s 32M "$TMPD/disk32.img"

# A valid log recorded for the 64M disk (and cleanly stopped).
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" replica-log-size=8M
stop_nbdkit
cp "$TMPD/log64" "$TMPD/log64.orig"

expect_fail missing-log 'replica-log.*required' \
    file "$TMPD/disk64.img"

expect_fail missing-dir "replica-log.*directory $TMPD/nodir does not exist" \
    file "$TMPD/disk64.img" replica-log="$TMPD/nodir/log"

expect_fail small-size 'replica-log-size.*below the minimum' \
    file "$TMPD/disk64.img" replica-log="$TMPD/small" replica-log-size=1M
[ ! -e "$TMPD/small" ] || fail "small-size: a log file was created"

expect_fail bad-size-MB "replica-log-size.*cannot parse size '64MB'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/bad" replica-log-size=64MB
expect_fail bad-size-frac "replica-log-size.*cannot parse size '1\\.5G'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/bad" replica-log-size=1.5G
expect_fail bad-size-empty "replica-log-size.*cannot parse size" \
    file "$TMPD/disk64.img" replica-log="$TMPD/bad" replica-log-size=
[ ! -e "$TMPD/bad" ] || fail "bad-size: a log file was created"

expect_fail unknown-key "unknown parameter 'replica-foo'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" replica-foo=1
expect_fail sync-timeout-0 "replica-sync-timeout: '0' is under the minimum" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" replica-sync-timeout=0

# What the replicator would refuse at each start (the filter restarting
# it every second, the link connecting for ever) is refused here.
touch "$TMPD/psk"
expect_fail bind-name "replica-bind: 'localhost' is not a numeric" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://replica@192.0.2.1/ replica-tls-psk="$TMPD/psk" \
    replica-bind=localhost
expect_fail username-conflict "replica-tls-username: 'bob' conflicts with the user 'alice'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://alice@192.0.2.1/ replica-tls-psk="$TMPD/psk" \
    replica-tls-username=bob
expect_fail bind-family "replica-bind: ::1 is an IPv6 address, the peer 192.0.2.1 an IPv4 one" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://replica@192.0.2.1/ replica-tls-psk="$TMPD/psk" \
    replica-bind=::1
expect_fail bind-bad-port "replica-peer: bad port '99999' in the peer URI" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbd://127.0.0.1:99999/ replica-insecure=yes \
    replica-bind=127.0.0.1
expect_fail bind-scoped-family "replica-bind: 127.0.0.1 is an IPv4 address, the peer fe80::1%lo an IPv6 one" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer='nbd://[fe80::1%25lo]:10809/' replica-insecure=yes \
    replica-bind=127.0.0.1
expect_fail encoded-user-conflict "replica-tls-username: 'bob' conflicts with the user 'alice'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://al%69ce@192.0.2.1/ replica-tls-psk="$TMPD/psk" \
    replica-tls-username=bob
expect_fail plain-with-tls "replica-peer: nbd://192.0.2.1/ is a plaintext URI, but replica-tls-" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbd://192.0.2.1/ replica-insecure=yes \
    replica-tls-psk="$TMPD/psk"
expect_fail psk-directory "replica-tls-psk: $TMPD is not a regular file" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://replica@192.0.2.1/ replica-tls-psk="$TMPD"
expect_fail peer-export "replica-peer: the URI names export 'disk'" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-peer=nbds://replica@192.0.2.1/disk replica-tls-psk="$TMPD/psk"

# Sums of 4 KiB blocks are addressed for volumes of up to 256 TiB.
expect_fail huge-volume "replica-sync-block-size: blocks of 4096 bytes cover volumes of up to 256 TiB" \
    memory 300T replica-log="$TMPD/huge" replica-log-size=8M

# A creation killed midway (a 1G log takes a while to write out) leaves
# no file at the log's path for the next start to refuse ("bad magic"):
# the log is formatted under LOG.replica-new, then linked into place.
rm -f "$TMPD/sock"
(
    [ -n "$NBDKIT_PRELOAD" ] && export LD_PRELOAD="$NBDKIT_PRELOAD"
    exec nbdkit -f -U "$TMPD/sock" --filter="$FILTER" file \
        "$TMPD/disk64.img" replica-log="$TMPD/big.log" replica-log-size=1G
) 2>"$TMPD/big.err" &
pid=$!
register_pid $pid
for _ in $(seq 1 100); do
    [ -e "$TMPD/big.log.replica-new" ] && break
    sleep 0.02
done
[ -e "$TMPD/big.log.replica-new" ] || fail "the new log was not being written"
kill -9 $pid
wait $pid 2>/dev/null || true
[ ! -e "$TMPD/big.log" ] || fail "a creation killed midway left $TMPD/big.log"
start_nbdkit "$TMPD/sock" "$TMPD/big2.err" file "$TMPD/disk64.img" \
    replica-log="$TMPD/big.log" replica-log-size=8M
stop_nbdkit
[ ! -e "$TMPD/big.log.replica-new" ] || fail "the leftover new log is still there"
echo "killed-creation: the restart created the log"

expect_fail control-dir "replica-control: directory $TMPD/nodir does not exist" \
    file "$TMPD/disk64.img" replica-log="$TMPD/ctl-dir.log" \
    replica-control="$TMPD/nodir/x.ctl"
[ ! -e "$TMPD/ctl-dir.log" ] || fail "control-dir: a log file was created"

expect_fail wrong-disk 'replica-log.*recorded for a backing of 67108864 bytes.*33554432' \
    file "$TMPD/disk32.img" replica-log="$TMPD/log64"
cmp "$TMPD/log64" "$TMPD/log64.orig" || fail "wrong-disk: the log was modified"

head -c $((8 * 1024 * 1024)) /dev/urandom > "$TMPD/random.log"
expect_fail bad-magic 'replica-log.*not a replica log: bad magic' \
    file "$TMPD/disk64.img" replica-log="$TMPD/random.log"

: > "$TMPD/empty.log"
expect_fail empty-log 'replica-log.*not a replica log' \
    file "$TMPD/disk64.img" replica-log="$TMPD/empty.log"

# Version: byte 7 of the magic (and so the slot CRC) in both slots; the
# version is checked before the CRC, so the message names the version.
cp "$TMPD/log64.orig" "$TMPD/version.log"
printf '\x02' | dd of="$TMPD/version.log" bs=1 seek=7 conv=notrunc status=none
printf '\x02' | dd of="$TMPD/version.log" bs=1 seek=$((4096 + 7)) conv=notrunc status=none
expect_fail bad-version 'replica-log.*unsupported log format version' \
    file "$TMPD/disk64.img" replica-log="$TMPD/version.log"
# Same with the 32-bit version field (offset 8) instead.
cp "$TMPD/log64.orig" "$TMPD/version2.log"
printf '\x07' | dd of="$TMPD/version2.log" bs=1 seek=8 conv=notrunc status=none
printf '\x07' | dd of="$TMPD/version2.log" bs=1 seek=$((4096 + 8)) conv=notrunc status=none
expect_fail bad-version-field 'replica-log.*unsupported log format version' \
    file "$TMPD/disk64.img" replica-log="$TMPD/version2.log"

# Truncated log file.
head -c $((4 * 1024 * 1024)) "$TMPD/log64.orig" > "$TMPD/trunc.log"
expect_fail truncated 'replica-log.*truncated' \
    file "$TMPD/disk64.img" replica-log="$TMPD/trunc.log"

# Log in use: a second nbdkit on the same log while the first serves.
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64"
expect_fail in-use "replica-log.*$TMPD/log64 is in use by another process" \
    file "$TMPD/disk64.img" replica-log="$TMPD/log64" \
    replica-control="$TMPD/other.ctl"
# ... and the loser did not disturb the first one's control socket.
[ "$(status_field "$TMPD/log64.ctl" state)" = standalone ] ||
    fail "in-use: the running server's control socket is broken"
nbdsh -u "$(uri_of "$TMPD/sock")" -c 'h.pwrite(b"x" * 512, 0)' ||
    fail "in-use: the running server no longer serves"
stop_nbdkit

# Log directory not writable.  Root ignores mode bits, so use a
# read-only tmpfs in a private mount namespace.
if unshare -m true 2>/dev/null; then
    mkdir "$TMPD/ro"
    cat > "$TMPD/ro.sh" <<'EOF'
mount -t tmpfs -o ro tmpfs "$TMPD/ro" || exit 99
if [ -n "$NBDKIT_PRELOAD" ]; then export LD_PRELOAD="$NBDKIT_PRELOAD"; fi
exec nbdkit -f -U "$TMPD/sock.ro" --filter="$FILTER" \
    file "$TMPD/disk64.img" replica-log="$TMPD/ro/log"
EOF
    rc=0
    export TMPD
    timeout 20 unshare -m bash "$TMPD/ro.sh" > "$TMPD/ro.out" 2>&1 ||
        rc=$?
    if [ $rc = 99 ]; then
        skip "not-writable: cannot mount a read-only tmpfs"
    else
        [ $rc -ne 0 ] && [ $rc -ne 124 ] ||
            { cat "$TMPD/ro.out"; fail "not-writable: exit status $rc"; }
        grep -qE "replica-log.*directory $TMPD/ro is not writable" "$TMPD/ro.out" ||
            { cat "$TMPD/ro.out"; fail "not-writable: no clear error line"; }
        echo "not-writable: exit $rc: $(grep error "$TMPD/ro.out")"
    fi
else
    skip "not-writable: unshare -m is not permitted here"
fi

# Each failure printed exactly one error line.
for f in "$TMPD"/*.out; do
    n=$(grep -c 'error' "$f" || true)
    [ "$n" = 1 ] || { cat "$f"; fail "$(basename "$f"): $n error lines"; }
done
echo "$0: OK"
