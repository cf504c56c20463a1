#!/usr/bin/env bash
# The secondary is promoted while its primary lives and the link is
# idle (an operator's mistake, or a failover the old primary did not
# see).  The old primary must notice within a few heartbeats (the
# replicator checks the role in every heartbeat's HELLO), not stay
# "replicating" until its next write is refused; and a verify must not
# compare against the promoted node (its sums are refused: it is a
# primary with clients of its own now).
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" sync
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
"$REPLICACTL" --control "$TMPD/sec.ctl" promote || fail "promote"

for _ in $(seq 1 100); do
    [ "$(status_field "$TMPD/pri.ctl" link)" != replicating ] && break
    sleep 0.1
done
link=$(status_field "$TMPD/pri.ctl" link)
[ "$link" != replicating ] ||
    fail "10 s after the peer's promote the idle link is still replicating"
echo "old primary's link: $link ($(status_field "$TMPD/pri.ctl" link_error))"

rc=0
"$REPLICACTL" --control "$TMPD/pri.ctl" verify --timeout 60 \
    >"$TMPD/verify.out" 2>&1 || rc=$?
cat "$TMPD/verify.out"
[ $rc = 1 ] || fail "verify against a promoted peer: exit status $rc"
grep -q "match" "$TMPD/verify.out" &&
    fail "verify compared against the promoted peer"
stop_pair
echo "$0: ok"
