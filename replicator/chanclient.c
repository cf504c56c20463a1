/* nbd-replicator: the channel to the filter (common/chan.h).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Nonblocking framing on the control socket, so that the poll loop
 * never waits on the filter: received bytes are parsed into frames as
 * they arrive (chan_decode_hdr, chan_check_crc), frames to send are
 * queued and written when the socket takes them.  Any bad frame, end
 * of file or write error marks the channel broken; the main loop then
 * drops it and reconnects.  The queue is bounded: a filter that stops
 * reading for CHAN_OUT_MAX bytes of frames is treated as gone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "replicator.h"

#define CHAN_IN_SIZE  (128 * 1024)    /* >= one whole frame */
#define CHAN_OUT_MAX  (4 * 1024 * 1024)

/* A frame that does not fit would never be parsed, and a read of 0
 * bytes into a full buffer would look like the end of file.
 */
_Static_assert (CHAN_IN_SIZE >= CHAN_HDR_SIZE + CHAN_TEXT_MAX,
                "the receive buffer holds the largest frame");

void
chanc_init (struct chanc *c)
{
  memset (c, 0, sizeof *c);
  c->fd = -1;
}

void
chanc_break (struct chanc *c, const char *fmt, ...)
{
  va_list ap;

  if (c->broken)
    return;                     /* keep the first reason */
  c->broken = true;
  va_start (ap, fmt);
  vsnprintf (c->why, sizeof c->why, fmt, ap);
  va_end (ap);
}

/* Connect (a blocking connect on a Unix socket does not wait on the
 * peer's accept) and queue the attach command.
 */
int
chanc_connect (struct chanc *c, const char *path, char *err, size_t errlen)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  static const char attach[] = CHAN_ATTACH_CMD "\n";
  int fd;

  chanc_close (c);
  if (strlen (path) >= sizeof addr.sun_path) {
    snprintf (err, errlen, "%s: socket path is too long", path);
    return -1;
  }
  strcpy (addr.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    snprintf (err, errlen, "socket: %m");
    return -1;
  }
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK) == -1) {
    snprintf (err, errlen, "%s: %m", path);
    close (fd);
    return -1;
  }
  c->in = malloc (CHAN_IN_SIZE);
  c->out_cap = 4096;
  c->out = malloc (c->out_cap);
  if (!c->in || !c->out) {
    snprintf (err, errlen, "malloc: %m");
    close (fd);
    free (c->in);
    free (c->out);
    chanc_init (c);
    return -1;
  }
  c->fd = fd;
  memcpy (c->out, attach, sizeof attach - 1);
  c->out_len = sizeof attach - 1;
  return 0;
}

void
chanc_close (struct chanc *c)
{
  if (c->fd >= 0)
    close (c->fd);
  free (c->in);
  free (c->out);
  chanc_init (c);
}

void
chanc_send (struct chanc *c, const struct chan_msg *m)
{
  /* This frame's size, not the largest (CHAN_SUMS texts are 64 KiB,
   * most frames have none).
   */
  size_t need = CHAN_HDR_SIZE +
    (m->text_len > CHAN_TEXT_MAX ? CHAN_TEXT_MAX : m->text_len);

  if (c->fd == -1 || c->broken)
    return;
  if (c->out_len + need > c->out_cap) {
    size_t cap = c->out_cap;
    uint8_t *p;

    while (c->out_len + need > cap)
      cap *= 2;
    if (cap > CHAN_OUT_MAX) {
      chanc_break (c, "the filter does not read the channel");
      return;
    }
    p = realloc (c->out, cap);
    if (!p) {
      chanc_break (c, "realloc: %m");
      return;
    }
    c->out = p;
    c->out_cap = cap;
  }
  c->out_len += chan_encode (m, c->out + c->out_len);
}

void
chanc_sendf (struct chanc *c, uint16_t type, uint64_t a, uint64_t b,
             uint64_t cc, uint64_t d, uint64_t e, const char *text)
{
  struct chan_msg m;

  chan_msg_init (&m, type, a, b, cc, d, e, text);
  chanc_send (c, &m);
}

void
chanc_flush (struct chanc *c)
{
  size_t off = 0;

  if (c->fd == -1 || c->broken)
    return;
  while (off < c->out_len) {
    ssize_t r = send (c->fd, c->out + off, c->out_len - off,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      chanc_break (c, "write: %m");
      return;
    }
    off += r;
  }
  memmove (c->out, c->out + off, c->out_len - off);
  c->out_len -= off;
}

/* The filter answers an attach it cannot serve with one JSON line
 * ({"error":...}) instead of frames, and closes.
 */
static bool
refused (struct chanc *c, bool eof)
{
  const uint8_t *nl;
  size_t n;

  if (c->got_frame || c->in_len == 0 || c->in[0] != '{')
    return false;
  nl = memchr (c->in, '\n', c->in_len);
  if (!nl && !eof && c->in_len < CHAN_IN_SIZE)
    return true;                /* wait for the whole line */
  n = nl ? (size_t) (nl - c->in) : c->in_len;
  chanc_break (c, "the filter refused the attach: %.*s",
               (int) (n > 200 ? 200 : n), (const char *) c->in);
  return true;
}

/* Parse the whole frames in c->in; keep a partial one for later. */
static void
parse_frames (struct chanc *c, chanc_frame_fn fn, void *opaque)
{
  size_t off = 0;

  if (refused (c, false))
    return;

  while (!c->broken && c->in_len - off >= CHAN_HDR_SIZE) {
    struct chan_msg m;
    const char *why;
    const uint8_t *hdr = c->in + off;

    if (chan_decode_hdr (hdr, &m, &why) == -1) {
      chanc_break (c, "bad frame from the filter: %s", why);
      break;
    }
    if (c->in_len - off < CHAN_HDR_SIZE + m.text_len)
      break;
    memcpy (m.text, hdr + CHAN_HDR_SIZE, m.text_len);
    m.text[m.text_len] = '\0';
    if (chan_check_crc (hdr, &m) == -1) {
      chanc_break (c, "bad frame from the filter: checksum mismatch");
      break;
    }
    off += CHAN_HDR_SIZE + m.text_len;
    c->got_frame = true;
    fn (opaque, &m);
  }
  memmove (c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
}

void
chanc_read (struct chanc *c, chanc_frame_fn fn, void *opaque)
{
  bool eof = false;
  int reads = 0;

  /* A bounded number of reads: a chatty filter must not starve the
   * peer's side of the loop.
   */
  while (c->fd >= 0 && !c->broken && !eof && reads++ < 16) {
    ssize_t r = read (c->fd, c->in + c->in_len, CHAN_IN_SIZE - c->in_len);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        chanc_break (c, "read: %m");
      break;
    }
    if (r == 0)
      eof = true;
    c->in_len += r;
    /* Frames before the end of file still count. */
    parse_frames (c, fn, opaque);
  }
  if (eof && !refused (c, true))
    chanc_break (c, "the filter closed the channel");
}
