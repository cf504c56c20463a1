/* nbd-replica: work around an ASan start-up bug when libasan is
 * LD_PRELOADed into (uninstrumented) nbdkit.  Tests only.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Preloaded libraries are initialized after the program's own
 * dependencies, so libasan is not yet initialized when libp11-kit's
 * constructor (nbdkit -> gnutls -> p11-kit) calls newlocale().
 * newlocale() holds glibc's __libc_setlocale_lock for writing and calls
 * malloc(); ASan's malloc interceptor then initializes ASan, which looks
 * up the optional symbol "swift_demangle" with dlsym() and clears the
 * failure with dlerror(); dlerror() translates its message (dcgettext),
 * which takes and releases the same lock.  newlocale()'s own unlock then
 * underflows the lock's reader count.  From then on, the first strerror()
 * or "%m" in nbdkit (any error message with an errno) leaves the lock
 * looking read-held, and at exit p11-kit's destructor (freelocale) waits
 * for it forever: nbdkit hangs on exit (SIGTERM, or a startup error).
 *
 * Defining swift_demangle makes that dlsym() succeed, so dlerror() has
 * nothing to translate.  ASan calls it only to demangle Swift names;
 * NULL means "not demangled".  Preloaded after libasan by
 * tests/meson.build in sanitized builds.
 */
#include <stddef.h>
#include <stdint.h>

char *swift_demangle (const char *mangled, size_t len, char *out,
                      size_t *outlen, uint32_t flags);

char *
swift_demangle (const char *mangled, size_t len, char *out, size_t *outlen,
                uint32_t flags)
{
  return NULL;
}
