#!/usr/bin/env bash
# sync mode: SIGKILL of the primary in a write storm (tests/repl-kill.inc).
MODE=sync
source "$SRCDIR/tests/repl-kill.inc"
