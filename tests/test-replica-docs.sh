#!/usr/bin/env bash
# Everything a user can type or read is documented: every replica-* key
# (in the filter's POD page, its SYNOPSIS, and nbdkit --help), every
# debug flag, every replicactl command, option and status field (in
# replicactl's POD page and --help).  The names are taken from the C
# sources, so a new key or option without documentation fails here.
# Also: the POD pages keep lines under 80 columns, without trailing
# spaces (podchecker, suite 'docs', checks the syntax).
source "$SRCDIR/tests/functions.sh"

filter_pod=$SRCDIR/man/nbdkit-replica-filter.pod
ctl_pod=$SRCDIR/man/replicactl.pod
replica_c=$SRCDIR/plugin/replica.c
replicactl_c=$SRCDIR/tools/replicactl.c
control_c=$SRCDIR/plugin/control.c

for f in "$filter_pod" "$ctl_pod" "$replica_c" "$replicactl_c" "$control_c" \
         "$FILTER" "$REPLICACTL"
do
    [ -f "$f" ] || fail "missing $f"
done

# section FILE HEADING: the text of one =head1 section.
section ()
{
    awk -v h="=head1 $2" '
        $0 == h { on = 1; next }
        /^=head1 / { on = 0 }
        on { print }' "$1"
}

# names REGEX FILE...: the first double-quoted string of every match.
names ()
{
    local re=$1
    shift
    grep -ohE "$re" "$@" | sed -E 's/^[^"]*"([^"]*)".*/\1/' | sort -u
}

errors=0
missing () { echo "$0: not documented: $*" >&2; errors=$((errors + 1)); }

# --- Filter keys.
keys=$(names 'strcmp \(key, *"replica-[a-z0-9-]+"\)' "$replica_c" \
           "$SRCDIR/plugin/replconfig.c")
[ -n "$keys" ] || fail "found no replica-* key in $replica_c"
synopsis=$(section "$filter_pod" SYNOPSIS)
params=$(section "$filter_pod" PARAMETERS)
help=$(run_nbdkit --filter="$FILTER" null --help 2>&1) ||
    fail "nbdkit --filter=$FILTER null --help failed: $help"
for k in $keys; do
    grep -qF "$k=" <<<"$synopsis" ||
        missing "$k in the SYNOPSIS of nbdkit-replica-filter.pod"
    # B<key=>VALUE, or one item per value of an enum: B<key=value>
    grep -qE "^=item B<$k=[a-z0-9]*>" <<<"$params" ||
        missing "$k: no '=item B<$k=>' under PARAMETERS"
    grep -qE "^$k=" <<<"$help" ||
        missing "$k in nbdkit --help (the filter's config_help)"
done

# --- Debug flags: NBDKIT_DLL_PUBLIC int replica_debug_FLAG.
flags=$(grep -ohE 'NBDKIT_DLL_PUBLIC int replica_debug_[a-z0-9_]+' \
            "$SRCDIR"/plugin/*.c | sed 's/.*replica_debug_//' | sort -u)
[ -n "$flags" ] || fail "found no replica_debug_* flag in plugin/*.c"
debug=$(section "$filter_pod" "DEBUG FLAGS")
for f in $flags; do
    grep -qF "B<-D replica.$f=1>" <<<"$debug" ||
        missing "-D replica.$f=1 under DEBUG FLAGS"
done

# --- replicactl: commands, options, status fields.
ctl_synopsis=$(section "$ctl_pod" SYNOPSIS)
commands_sec=$(section "$ctl_pod" COMMANDS)
options_sec=$(section "$ctl_pod" OPTIONS)
usage=$("$REPLICACTL" --help) || fail "replicactl --help failed"

cmds=$(names 'strcmp \(argv\[0\], *"[a-z-]+"\)' "$replicactl_c")
[ -n "$cmds" ] || fail "found no command in $replicactl_c"
for c in $cmds; do
    grep -qE "^ replicactl .*\b$c\b" <<<"$ctl_synopsis" ||
        missing "replicactl $c in the SYNOPSIS"
    grep -qE "^=item B<$c>" <<<"$commands_sec" ||
        missing "replicactl $c: no '=item B<$c>' under COMMANDS"
    grep -qE "replicactl .*\b$c\b" <<<"$usage" ||
        missing "replicactl $c in replicactl --help"
done

# Long options of getopt_long: { "name", ..._argument, ... }
longopts=$(names '\{ *"[a-z0-9-]+", *(no|required|optional)_argument' \
               "$replicactl_c")
# Options of the commands: strcmp (argv[i], "--name")
cmdopts=$(names 'strcmp \(argv\[i\], *"--[a-z0-9-]+"\)' "$replicactl_c" |
              sed 's/^--//')
[ -n "$longopts" ] || fail "found no long option in $replicactl_c"
for o in $longopts $cmdopts; do
    grep -qE "^=item B<--$o(=|>)" <<<"$options_sec" ||
        missing "replicactl --$o: no '=item B<--$o>' under OPTIONS"
done
for o in $cmdopts; do
    grep -qF -- "--$o" <<<"$ctl_synopsis" ||
        missing "replicactl --$o in the SYNOPSIS"
    grep -qF -- "--$o" <<<"$usage" ||
        missing "replicactl --$o in replicactl --help"
done
# Short options: the optstring of getopt_long, e.g. "+c:h".
shortopts=$(grep -oE 'getopt_long \([^"]*"[^"]*"' "$replicactl_c" |
                sed -E 's/.*"([^"]*)"$/\1/' | tr -d '+:-' | fold -w1)
[ -n "$shortopts" ] || fail "found no getopt_long optstring"
for o in $shortopts; do
    grep -qE "^=item B<-$o>" <<<"$options_sec" ||
        missing "replicactl -$o: no '=item B<-$o>' under OPTIONS"
done

# Status fields: the keys that status_json adds, and the replication
# fields (repl_status on a primary, secondary_status on a secondary).
fields=$({ sed -n '/^status_json /,/^}/p' "$control_c"
           sed -n '/^repl_status /,/^}/p' "$SRCDIR/plugin/repl.c"
           sed -n '/^secondary_status /,/^}/p' "$SRCDIR/plugin/secondary.c"
           sed -n '/^sync_status /,/^}/p' "$SRCDIR/plugin/sync.c"
         } | names '(add_[a-z0-9]+|json_object_object_add) \(o, *"[a-z0-9_]+"')
[ -n "$fields" ] || fail "found no status field in status_json"
status_sec=$(section "$ctl_pod" "STATUS FIELDS")
for f in $fields; do
    grep -qE "^=item B<$f> \(" <<<"$status_sec" ||
        missing "status field $f: no '=item B<$f> (TYPE)' under STATUS FIELDS"
done

# --- nbd-replicator: every long option in its POD page and --help.
repl_pod=$SRCDIR/man/nbd-replicator.pod
[ -f "$repl_pod" ] || fail "missing $repl_pod"
ropts=$(names '\{ *"[a-z0-9-]+", *(no|required|optional)_argument' \
            "$SRCDIR/replicator/options.c")
[ -n "$ropts" ] || fail "found no long option in replicator/options.c"
rhelp=$("$REPLICATOR" --help) || fail "nbd-replicator --help failed"
repl_opts_sec=$(section "$repl_pod" OPTIONS)
for o in $ropts; do
    grep -qE "^=item B<--$o>" <<<"$repl_opts_sec" ||
        missing "nbd-replicator --$o: no '=item B<--$o>' under OPTIONS"
    grep -qF -- "--$o" <<<"$rhelp" ||
        missing "nbd-replicator --$o in its --help"
done

# --- Layout of the POD sources.
for pod in "$filter_pod" "$ctl_pod" "$repl_pod"; do
    if awk 'length > 79 { print FILENAME ":" FNR ": line too long"; bad = 1 }
            /[ \t]$/ { print FILENAME ":" FNR ": trailing space"; bad = 1 }
            END { exit bad }' "$pod"; then :
    else
        errors=$((errors + 1))
    fi
done

[ "$errors" -eq 0 ] || fail "$errors documentation problems"
nl=$'\n'
echo "$0: OK (keys: ${keys//$nl/ }; debug flags: ${flags//$nl/ };" \
     "commands: ${cmds//$nl/ };" \
     "options: ${longopts//$nl/ } ${cmdopts//$nl/ };" \
     "$(wc -w <<<"$fields") status fields)"
