#!/usr/bin/env bash
# async mode: SIGKILL of the primary in a write storm (tests/repl-kill.inc).
MODE=async
source "$SRCDIR/tests/repl-kill.inc"
