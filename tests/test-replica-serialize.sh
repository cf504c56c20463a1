#!/usr/bin/env bash
# A plugin whose thread model is serialize_all_requests is promised by
# nbdkit never to see two callbacks at once.  The filter's checkpoint
# thread flushes outside nbdkit's request lock, so every call the filter
# makes into the plugin takes the filter's plugin-call lock (conns.c),
# which the checkpoint's flushes hold exclusively.  nbdkit's sh plugin
# records every overlap it sees (mkdir as a mutex) while 20 connections
# open, write, close, and checkpoints run.  The calls nbdkit makes to
# the plugin with no filter code in between (a connection's prepare,
# finalize, close) are the documented exception: overlaps with them are
# not counted.
source "$SRCDIR/tests/functions.sh"
make_tmpdir
D=$TMPD
truncate -s 16M "$D/disk.img"
# (The script runs without the ASan suite's preload: bash's own leaks
# at exit would abort it.)
cat > "$D/plugin.sh" <<'EOS'
#!/usr/bin/env -S -u LD_PRELOAD bash
D=__D__
m=$1
case "$m" in
  load|unload|config|config_complete|thread_model|can_multi_conn|get_ready|after_fork|preconnect|magic_config_key|dump_plugin) ;;
  *)
    # The lock is a symlink naming its holder (made atomically).
    if ln -s "$m" "$D/lock" 2>/dev/null; then held=1; else held=0
      echo "CONCURRENT $m (holder: $(readlink "$D/lock" 2>/dev/null))" \
          >> "$D/conc"; fi
    ;;
esac
rel () { [ "${held:-0}" = 1 ] && rm -f "$D/lock"; return 0; }
case "$m" in
  thread_model) echo serialize_all_requests ;;
  open) sleep 0.05; echo h; rel ;;
  close|finalize|prepare) sleep 0.02; rel ;;
  get_size) echo 16M; rel ;;
  can_write|can_flush) rel; exit 0 ;;
  can_multi_conn|can_trim) rel; exit 3 ;;
  pread) dd if="$D/disk.img" skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none; rel ;;
  pwrite) dd of="$D/disk.img" seek=$4 oflag=seek_bytes conv=notrunc status=none; rel ;;
  flush) sleep 0.2; sync "$D/disk.img"; rel ;;
  *) rel; exit 2 ;;
esac
EOS
sed -i "s|__D__|$D|" "$D/plugin.sh"
chmod +x "$D/plugin.sh"
uri=$(uri_of "$D/sock")
start_nbdkit "$D/sock" "$D/nbdkit.err" sh "$D/plugin.sh" \
    replica-log="$D/log" replica-log-size=8M
for i in $(seq 1 20); do
    nbdsh -u "$uri" -c "h.pwrite(b'x' * 4096, $i * 4096)" || fail "write $i"
done
sleep 2
stop_nbdkit
# Not counted: the calls nbdkit makes to the plugin without the filter
# in between (design 7), and an overlap whose holder had already left
# when it was looked at.
exempt='prepare|finalize|close|preconnect|export_description'
grep -v -E -e "CONCURRENT ($exempt) " -e "holder: ($exempt|)\)" "$D/conc" \
    >"$D/conc.counted" 2>/dev/null || true
if [ -s "$D/conc.counted" ]; then
    sort "$D/conc.counted" | uniq -c | sort -rn | head -20
    fail "the plugin saw concurrent callbacks"
fi
echo "$0: ok ($(wc -l <"$D/conc" 2>/dev/null || echo 0) overlaps not counted)"
