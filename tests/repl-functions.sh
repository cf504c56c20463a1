# nbd-replica: helpers of the replication tests (sourced after
# functions.sh).  Copyright (C) 2026 the nbd-replica authors.
# BSD-3-Clause, see COPYING.
#
# A pair on this machine: the secondary serves $TMPD/sec.sock with TLS
# (PSK user "replica", keys $TMPD/keys.psk), log $TMPD/sec.log, control
# $TMPD/sec.ctl; the primary serves $TMPD/pri.sock in plaintext to its
# clients, log $TMPD/pri.log, control $TMPD/pri.ctl, and replicates to
# the secondary.

STAMP="/usr/bin/python3 $SRCDIR/tests/stamp.py"

make_psk ()
{
    (umask 077; printf 'replica:%s\n' \
        "$(head -c 32 /dev/urandom | xxd -p -c 64)" > "${1:-$TMPD/keys.psk}")
}

PRI_URI=
SEC_URI=
pri_uri () { echo "nbd+unix:///?socket=$TMPD/pri.sock"; }
# A client of the secondary (TLS, the default export).
sec_uri () {
    echo "nbds+unix://replica@/?socket=$TMPD/sec.sock&tls-psk-file=$TMPD/keys.psk"
}

# sec_nbdsh ARGS...: nbdsh connected to the secondary (a PSK file in a
# URI needs set_uri_allow_local_file).
sec_nbdsh ()
{
    nbdsh -c "h.set_uri_allow_local_file(True)" \
          -c "h.connect_uri('$(sec_uri)')" "$@"
}

# start_secondary DISK [ARGS...]: sets SEC_PID.
start_secondary ()
{
    local disk=$1
    shift
    READY_URI=$(sec_uri) start_nbdkit "$TMPD/sec.sock" "$TMPD/sec.err" \
        --tls=require --tls-psk="$TMPD/keys.psk" \
        file "$disk" replica-role=secondary replica-log="$TMPD/sec.log" \
        replica-log-size="${LOG_SIZE:-64M}" replica-control="$TMPD/sec.ctl" \
        "$@"
    SEC_PID=$NBDKIT_PID
}

# start_primary DISK MODE [ARGS...]: sets PRI_PID.  $PRI_NBDKIT_OPTS:
# nbdkit options before the plugin (-v -D replica.sync=1).
start_primary ()
{
    local disk=$1 mode=$2
    shift 2
    # shellcheck disable=SC2086
    start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" ${PRI_NBDKIT_OPTS:-} \
        file "$disk" replica-log="$TMPD/pri.log" \
        replica-log-size="${LOG_SIZE:-64M}" replica-control="$TMPD/pri.ctl" \
        replica-mode="$mode" \
        replica-peer="nbds+unix://replica@/?socket=$TMPD/sec.sock" \
        replica-tls-psk="$TMPD/keys.psk" "$@"
    PRI_PID=$NBDKIT_PID
}

# stop_pair: orderly stop of the primary, then of the secondary.
stop_pair ()
{
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    NBDKIT_PID=$SEC_PID
    stop_nbdkit
}

# wait_field CONTROL KEY VALUE [SECONDS]: until status shows it.
wait_field ()
{
    local ctl=$1 key=$2 want=$3 secs=${4:-30} i v=
    for i in $(seq 1 $((secs * 10))); do
        v=$(status_field "$ctl" "$key" 2>/dev/null || true)
        [ "$v" = "$want" ] && return 0
        sleep 0.1
    done
    "$REPLICACTL" --control "$ctl" status >&2 || true
    fail "$ctl: $key is '$v', not '$want' after $secs s"
}

# replicator_pid [CTL]: the replicator the filter at CTL (the primary's
# by default) started, once it has attached (10 s at most), in REPL_PID
# and on stdout; registered for the cleanup (it must not outlive the
# test).  Call it directly, not in $(...): registering in a subshell
# would be lost.  Never 0 ("kill 0" signals the whole process group).
replicator_pid ()
{
    local ctl=${1:-$TMPD/pri.ctl} p i
    for i in $(seq 1 100); do
        p=$(status_field "$ctl" replicator_pid 2>/dev/null || true)
        if [ "${p:-0}" -gt 1 ] 2>/dev/null; then
            REPL_PID=$p
            register_pid "$p"
            echo "$p"
            return 0
        fi
        sleep 0.1
    done
    fail "$ctl: no replicator attached within 10 s"
}

# wait_log_flag LOG FLAG: until replicactl log-dump shows FLAG among
# the superblock flags of LOG (read without nbdkit's help), 10 s.
wait_log_flag ()
{
    for _ in $(seq 1 100); do
        "$REPLICACTL" log-dump "$1" | grep -q "^flags.*$2" && return 0
        sleep 0.1
    done
    fail "$1: its superblock never showed '$2'"
}

# same_volumes: the primary's and the secondary's volumes are equal.
same_volumes ()
{
    nbdcopy "$(pri_uri)" "$TMPD/pri.copy"
    nbdcopy "$(sec_uri)" "$TMPD/sec.copy"
    cmp "$TMPD/pri.copy" "$TMPD/sec.copy" ||
        fail "the secondary's volume differs from the primary's"
    rm -f "$TMPD/pri.copy" "$TMPD/sec.copy"
}

# start_writer: random 64 KiB writes to the primary into the first 64 MiB
# (4 sync chunks) until stop_writer; written: the bytes written so far.
# Sets WRITER_PID.
start_writer ()
{
    /usr/bin/python3 - "$(pri_uri)" "$TMPD/stop" "$TMPD/written" <<'PY' &
import nbd, os, random, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = 0
rnd = random.Random(7)
while not os.path.exists(sys.argv[2]):
    off = rnd.randrange(0, 1024) * 65536
    h.pwrite(os.urandom(65536), off)
    n += 1
    if n % 64 == 0:
        with open(sys.argv[3] + ".tmp", "w") as f:
            f.write(str(n * 65536))
        os.rename(sys.argv[3] + ".tmp", sys.argv[3])
h.flush()
h.shutdown()
PY
    WRITER_PID=$!
    register_pid $WRITER_PID
}
stop_writer ()
{
    touch "$TMPD/stop"
    wait $WRITER_PID || fail "the writer failed"
    rm -f "$TMPD/stop"
}
written () { cat "$TMPD/written" 2>/dev/null || echo 0; }
