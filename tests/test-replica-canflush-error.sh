#!/usr/bin/env bash
# A plugin without multi-conn keeps each connection's writes in a cache
# that only that connection's flush makes stable, so checkpoints flush
# every client's context.  If the plugin's can_flush fails for a
# client's context, the filter must not take that for "nothing to
# flush" (the checkpoint would pass writes nobody made stable, lost at a
# crash): the connection is refused before it can write.  With can_flush
# working, an acknowledged write survives a SIGKILL after a checkpoint
# passed it.  The plugin is nbdkit's sh plugin with a per-handle cache
# (a crash loses it).
source "$SRCDIR/tests/functions.sh"
make_tmpdir
D=$TMPD
truncate -s 16M "$D/disk.img"
# (The script runs without the ASan suite's preload: bash's own leaks
# at exit would abort it.)
cat > "$D/plugin.sh" <<'EOS'
#!/usr/bin/env -S -u LD_PRELOAD bash
D=__D__
case "$1" in
  config_complete) rm -f "$D"/count "$D"/cache.* ;;   # a crash loses caches
  thread_model) echo parallel ;;
  open) n=$(( $(cat "$D/count" 2>/dev/null || echo 0) + 1 ))
        echo $n > "$D/count"; echo "h$n" ;;
  get_size) echo 16M ;;
  can_write) exit 0 ;;
  can_flush) if [ -f "$D/fail-can-flush" ] && [ "$2" != h1 ]; then
                 echo "can_flush failed" >&2; exit 1
             fi; exit 0 ;;
  can_multi_conn|can_trim) exit 3 ;;
  pread) dd if="$D/disk.img" skip=$4 count=$3 iflag=skip_bytes,count_bytes \
            status=none ;;
  pwrite) f=$(mktemp "$D/data.XXXXXX"); cat > "$f"; echo "$4 $f" >> "$D/cache.$2" ;;
  flush) if [ -f "$D/cache.$2" ]; then
             while read -r off f; do
                 dd if="$f" of="$D/disk.img" seek="$off" oflag=seek_bytes \
                    conv=notrunc status=none
             done < "$D/cache.$2"
             rm -f "$D/cache.$2"
         fi ;;
  *) exit 2 ;;
esac
EOS
sed -i "s|__D__|$D|" "$D/plugin.sh"
chmod +x "$D/plugin.sh"
uri=$(uri_of "$D/sock")
ctl="$D/ctl"
start ()
{
    start_nbdkit "$D/sock" "$D/nbdkit.err" sh "$D/plugin.sh" \
        replica-log="$D/log" replica-log-size=8M replica-control="$ctl"
}

# wait_checkpoint SEQ: until the checkpoint passes SEQ.
wait_checkpoint ()
{
    for _ in $(seq 1 100); do
        [ "$(status_field "$ctl" checkpoint_seq)" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "no checkpoint passed seq $1"
}

start
touch "$D/fail-can-flush"
if nbdsh -u "$uri" -c 'h.pwrite(b"B" * 4096, 0)' 2>"$D/client.err"; then
    wait_checkpoint "$(status_field "$ctl" head_seq)"
    kill_nbdkit_hard
    rm -f "$D/fail-can-flush"
    start
    nbdsh -u "$uri" -c 'assert h.pread(4096, 0) == b"B" * 4096' ||
        fail "a write acknowledged on a connection whose can_flush failed" \
             "was lost at a crash after a checkpoint"
    fail "a connection whose can_flush failed was accepted"
fi
grep -q "cannot say whether it can flush" "$D/nbdkit.err" ||
    { cat "$D/nbdkit.err"; fail "no error message"; }

# Control: can_flush works, the client's context is flushed.
rm -f "$D/fail-can-flush"
nbdsh -u "$uri" -c 'h.pwrite(b"A" * 4096, 0)' || fail "write"
wait_checkpoint "$(status_field "$ctl" head_seq)"
kill_nbdkit_hard
start
nbdsh -u "$uri" -c 'assert h.pread(4096, 0) == b"A" * 4096' ||
    fail "an acknowledged write was lost"
stop_nbdkit
echo "$0: ok"
