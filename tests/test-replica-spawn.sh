#!/usr/bin/env bash
# The filter's handling of the replicator process (plugin/spawn.c):
#  1. a replicator that exits with an error right after each start (it
#     refuses what it was given) is restarted after 2, 4, 8 ... s, not
#     every second for ever;
#  2. nbdkit stopped while the replicator is between the filter's fork
#     and its exec exits promptly, and leaves no replicator behind (the
#     child used to run nbdkit's own SIGTERM handler, then exec a
#     replicator that never saw the signal, and nbdkit waited for it);
#  3. nbdkit as pid 1 (a container's init) still runs its replicator
#     (the child took "parent is pid 1" for "nbdkit is gone").
source "$SRCDIR/tests/functions.sh"
make_tmpdir
truncate -s 16M "$TMPD/disk.img"
PEER=(replica-peer=nbd://127.0.0.1:1/ replica-insecure=yes)

# 1. /bin/false as the replicator: starts at 0 s, then about 2, 6, 14 s.
start_nbdkit "$TMPD/sock" "$TMPD/refuse.err" file "$TMPD/disk.img" \
    replica-log="$TMPD/log1" replica-log-size=8M "${PEER[@]}" \
    replica-replicator=/bin/false
sleep 9
stop_nbdkit
n=$(grep -c 'exited with status 1' "$TMPD/refuse.err" || true)
cat "$TMPD/refuse.err" | grep 'exited with status' || true
[ "$n" -ge 2 ] || fail "the failing replicator was not restarted"
[ "$n" -le 4 ] || fail "$n restarts in 9 s: no backoff"
grep -q 'restarting it in 4 s' "$TMPD/refuse.err" ||
    fail "the delay did not grow"

# 2. The first child sleeps 3 s in execv (tests/faultinject.c); nbdkit
#    gets SIGTERM meanwhile.
shim="$BUILDDIR/tests/faultinject.so"
[ -f "$shim" ] || fail "$shim is not built"
saved_preload=${NBDKIT_PRELOAD:-}
export NBDKIT_PRELOAD="${NBDKIT_PRELOAD:+$NBDKIT_PRELOAD }$shim"
export REPLICA_FAULT_EXEC_SLEEP=3 REPLICA_FAULT_EXEC_MARK="$TMPD/forked"
start_nbdkit "$TMPD/sock" "$TMPD/stop.err" file "$TMPD/disk.img" \
    replica-log="$TMPD/log2" replica-log-size=8M "${PEER[@]}" \
    replica-control="$TMPD/stop.ctl"
export NBDKIT_PRELOAD="$saved_preload"
unset REPLICA_FAULT_EXEC_SLEEP REPLICA_FAULT_EXEC_MARK
pid=$NBDKIT_PID
for _ in $(seq 1 50); do
    [ -e "$TMPD/forked" ] && break
    sleep 0.1
done
[ -e "$TMPD/forked" ] || fail "the replicator's child never reached execv"
kids=$(pgrep -P "$pid" || true)
for k in $kids; do register_pid "$k"; done
t0=$(date +%s%N)
kill -TERM "$pid"
# A child of this shell: once it has exited it is a zombie until the
# wait below (kill -0 would still find it).
exited ()
{
    case $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) in
        Z|X|'') return 0 ;;
        *) return 1 ;;
    esac
}
for _ in $(seq 1 500); do
    exited "$pid" && break
    sleep 0.05
done
ms=$((($(date +%s%N) - t0) / 1000000))
exited "$pid" || { cat "$TMPD/stop.err"; fail "nbdkit still runs 25 s after SIGTERM"; }
wait "$pid" || true
echo "nbdkit exited ${ms} ms after SIGTERM"
[ "$ms" -lt 5000 ] || { cat "$TMPD/stop.err"; fail "nbdkit took $ms ms to stop: it waited for a replicator that missed the SIGTERM"; }
sleep 4      # past the exec the child would have made
left=$(pgrep -f -- "--control $TMPD/stop.ctl" || true)
for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
[ -z "$left" ] || { kill -9 $left; fail "a replicator was left running: $left"; }

# 3. nbdkit as pid 1 of a new pid namespace.
if unshare --pid --fork --mount-proc true 2>/dev/null; then
    rm -f "$TMPD/sock"
    unshare --pid --fork --mount-proc \
        env ${NBDKIT_PRELOAD:+LD_PRELOAD="$NBDKIT_PRELOAD"} \
        nbdkit -f -U "$TMPD/sock" --filter="$FILTER" file "$TMPD/disk.img" \
        replica-log="$TMPD/log3" replica-log-size=8M "${PEER[@]}" \
        replica-control="$TMPD/init.ctl" 2>"$TMPD/init.err" &
    upid=$!
    register_pid $upid
    for _ in $(seq 1 100); do
        grep -q 'attached to' "$TMPD/init.err" && break
        grep -q 'exited with status' "$TMPD/init.err" && break
        sleep 0.1
    done
    inner=$(pgrep -P "$upid" || true)
    [ -n "$inner" ] && register_pid "$inner"
    grep -q 'attached to' "$TMPD/init.err" ||
        { cat "$TMPD/init.err"; fail "as pid 1, nbdkit's replicator never attached"; }
    ! grep -q 'exited with status' "$TMPD/init.err" ||
        { cat "$TMPD/init.err"; fail "as pid 1, the replicator exited"; }
    kill -TERM "$inner"
    for _ in $(seq 1 100); do
        kill -0 "$upid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$upid" 2>/dev/null && fail "nbdkit as pid 1 did not stop"
    wait "$upid" || true
else
    skip "part 3: cannot make a pid namespace here"
fi
echo "PASS"
