#!/usr/bin/env bash
# A plugin that is not parallel and does not offer multi-conn: the
# checkpoint's flush takes the plugin-call lock exclusively and flushes
# every connection's context (plugin/conns.c).  Three clients write
# concurrently while checkpoints run; after SIGKILL and a restart every
# acknowledged write reads back.  What this can catch: nbdkit asserting
# or deadlocking when the checkpoint thread flushes the clients'
# contexts, and lost or misplaced data.  (That the per-connection flush
# is needed cannot be seen with the file plugin: all its handles share
# one page cache.)
source "$SRCDIR/tests/functions.sh"
requires qemu-io --version
make_tmpdir
truncate -s 64M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        --filter=noparallel --filter=multi-conn \
        file "$TMPD/disk.img" serialize=all-requests \
        multi-conn-mode=disable \
        replica-log="$TMPD/log" replica-log-size=8M \
        -v -D replica.checkpoint=1
}
start

pids=()
for i in 1 2 3; do
    cmds=()
    for j in $(seq 0 127); do
        cmds+=(-c "write -P $((i * 16 + j % 16)) $((i * 8192 + j * 64))k 64k")
    done
    qemu-io -f raw "${cmds[@]}" "$uri" >"$TMPD/qio$i" 2>&1 &
    pids+=($!)
    register_pid $!
done
for p in "${pids[@]}"; do
    wait "$p" || { cat "$TMPD"/qio*; fail "a writer failed"; }
done
# Let at least one checkpoint pass the writes.
for i in $(seq 1 50); do
    [ "$(status_field "$TMPD/log.ctl" checkpoints)" -ge 1 ] && break
    sleep 0.1
done
[ "$(status_field "$TMPD/log.ctl" checkpoints)" -ge 1 ] || fail "no checkpoint"
[ "$(status_field "$TMPD/log.ctl" state)" = standalone ] || fail "state"
kill_nbdkit_hard
start
for i in 1 2 3; do
    cmds=()
    for j in $(seq 0 127); do
        cmds+=(-c "read -P $((i * 16 + j % 16)) $((i * 8192 + j * 64))k 64k")
    done
    qemu-io -f raw "${cmds[@]}" "$uri" >"$TMPD/check$i" 2>&1 ||
        { cat "$TMPD/check$i"; fail "read back $i"; }
    if grep -q "Pattern verification failed" "$TMPD/check$i"; then
        fail "data of writer $i lost"
    fi
done
stop_nbdkit
echo "$0: OK"
