/* nbd-replica: keep nbdkit's plugin and filters loaded until the
 * process exits, in ASan runs.  Tests only.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * nbdkit unloads its plugin and filters (dlclose) before it exits, and
 * LeakSanitizer runs after that: memory that a module's globals still
 * pointed to then looks leaked, and its stack frames are "<unknown
 * module>", which no suppression can name.  With dlclose a no-op the
 * modules stay mapped, such memory is still reachable, and a real leak
 * is reported with its symbols; stop_nbdkit (tests/functions.sh) then
 * fails a test whose nbdkit did not exit cleanly.
 */
int dlclose (void *handle);

int
dlclose (void *handle)
{
  (void) handle;
  return 0;
}
