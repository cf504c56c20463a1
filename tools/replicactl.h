/* replicactl: what its two files share.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICACTL_H
#define REPLICACTL_H

#include <stdio.h>

/* replicactl.c: the control commands and main. */
extern void usage (FILE *fp, int status) __attribute__ ((noreturn));

/* replicactl-log.c: the commands on a log file (no nbdkit involved). */
extern int cmd_log_dump (int argc, char **argv);
extern int cmd_log_replay (int argc, char **argv);
extern int cmd_demote (int argc, char **argv);

#endif /* REPLICACTL_H */
