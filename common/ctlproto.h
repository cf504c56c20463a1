/* nbd-replica: the control channel's framing, shared by filter and tools.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * One request line (command words separated by spaces, at most
 * CTL_MAX_LINE-1 bytes, ending in \n); one reply line holding a JSON
 * object.  Version: commands are added, never changed.
 */
#ifndef REPLICA_CTLPROTO_H
#define REPLICA_CTLPROTO_H

#include <stddef.h>
#include <stdint.h>

#define CTL_MAX_LINE 1024

/* Read one line (without the \n) within timeout_ms; returns its length,
 * 0 on EOF, -1 on error or timeout.
 */
extern int ctl_read_line (int fd, char *buf, size_t len, int timeout_ms);
extern int ctl_write_all (int fd, const void *buf, size_t len);
/* Read until EOF into a malloc'd string. */
extern char *ctl_read_all (int fd, int timeout_ms);
/* Format a 16-byte UUID as 36 characters plus NUL. */
extern void rlog_uuid_str (const uint8_t uuid[16], char out[37]);

#endif /* REPLICA_CTLPROTO_H */
