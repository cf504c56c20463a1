/* nbd-replica: little-endian load/store helpers.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_LE_H
#define REPLICA_LE_H

#include <stdint.h>
#include <string.h>
#include <endian.h>

static inline void
put_le16 (uint8_t *p, uint16_t v)
{
  v = htole16 (v);
  memcpy (p, &v, 2);
}

static inline void
put_le32 (uint8_t *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static inline void
put_le64 (uint8_t *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

static inline uint16_t
get_le16 (const uint8_t *p)
{
  uint16_t v;
  memcpy (&v, p, 2);
  return le16toh (v);
}

static inline uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static inline uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

#endif /* REPLICA_LE_H */
