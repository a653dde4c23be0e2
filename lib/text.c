/* text.c: the one sanitiser for guest text (see text-private.h and hutch.h).
 *
 * A terminal obeys more than ESC: xterm, VTE and others take the C1 controls U+0080-U+009F as
 * CSI, OSC, DCS... whether they come as raw bytes (0x9B) or UTF-8 encoded (C2 9B), so an
 * OSC 52 (set the clipboard) or a title report needs no ESC. What passes here is valid UTF-8
 * with no C0 (but for \n and \t in text of lines), DEL, C1 or bidirectional override and
 * isolate characters (U+202A-U+202E, U+2066-U+2069: "Trojan Source" text that reads other
 * than it is). Everything else becomes '?': one per character, or one per byte of invalid
 * UTF-8 (overlong forms, surrogates, beyond U+10FFFF, stray or missing continuation bytes). */
#include "config.h"

#include "text-private.h"

/* What the bytes at p (n of them, n >= 1, p[0] >= 0x80) are: the length of the valid UTF-8
 * sequence there (its character in *ret_char), 0 when they are none, -1 when they are the
 * valid start of a sequence that the end of the buffer cuts off. */
static int utf8_sequence(const guchar *p, gsize n, gunichar *ret_char) {
  guchar c = p[0];
  int len;
  guchar lo = 0x80, hi = 0xBF; /* the range of the second byte; the others are 80-BF */
  gunichar ch;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    ch = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    ch = c & 0x0F;
    if (c == 0xE0)
      lo = 0xA0; /* no overlong forms */
    else if (c == 0xED)
      hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    ch = c & 0x07;
    if (c == 0xF0)
      lo = 0x90; /* no overlong forms */
    else if (c == 0xF4)
      hi = 0x8F; /* nothing beyond U+10FFFF */
  } else {
    return 0; /* a continuation byte, C0/C1 (overlong), F5-FF */
  }
  for (int i = 1; i < len; i++) {
    if ((gsize)i >= n)
      return -1;
    guchar b = p[i];
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
      return 0;
    ch = (ch << 6) | (b & 0x3F);
  }
  *ret_char = ch;
  return len;
}

static gboolean is_control_or_bidi(gunichar ch) {
  return (ch >= 0x80 && ch <= 0x9F) || (ch >= 0x202A && ch <= 0x202E) ||
         (ch >= 0x2066 && ch <= 0x2069);
}

/* Appends the sanitised text of p[0..n) to out and returns how many bytes it used: all of
 * them when final, else it stops before what the next bytes decide (an incomplete UTF-8
 * sequence, a '\r' that may be followed by '\n'). */
static gsize sanitize_append(GString *out, const guchar *p, gsize n, HutchTextFlags flags,
                             gboolean final) {
  gboolean lines = (flags & HUTCH_TEXT_LINES) != 0;
  gsize i = 0;
  while (i < n) {
    /* runs of printable ASCII, the common case, in one go */
    gsize run = i;
    while (run < n && p[run] >= 0x20 && p[run] < 0x7F)
      run++;
    if (run > i) {
      g_string_append_len(out, (const char *)p + i, (gssize)(run - i));
      i = run;
      continue;
    }
    guchar c = p[i];
    if (c < 0x80) {
      if (lines && c == '\r') {
        if (i + 1 == n && !final)
          break;
        if (i + 1 < n && p[i + 1] == '\n') {
          i++; /* "\r\n" is a line end like "\n" */
          continue;
        }
      }
      g_string_append_c(out, lines && (c == '\n' || c == '\t') ? (char)c : '?');
      i++;
      continue;
    }
    gunichar ch = 0;
    int len = utf8_sequence(p + i, n - i, &ch);
    if (len < 0 && !final)
      break;
    if (len <= 0) {
      g_string_append_c(out, '?');
      i++;
    } else {
      if (is_control_or_bidi(ch))
        g_string_append_c(out, '?');
      else
        g_string_append_len(out, (const char *)p + i, len);
      i += (gsize)len;
    }
  }
  return i;
}

char *hutch_text_sanitize(const char *bytes, gssize len, HutchTextFlags flags) {
  if (!bytes)
    return g_strdup("");
  gsize n = len < 0 ? strlen(bytes) : (gsize)len;
  GString *out = g_string_sized_new(n + 1);
  sanitize_append(out, (const guchar *)bytes, n, flags, TRUE);
  return g_string_free(out, FALSE);
}

void hutch_text_stream_init(HutchTextStream *stream, HutchTextFlags flags) {
  memset(stream, 0, sizeof(*stream));
  stream->flags = flags;
}

void hutch_text_stream_feed(HutchTextStream *stream, const char *bytes, gsize len, GString *out) {
  const guchar *p = (const guchar *)bytes;
  g_autofree guchar *joined = NULL;
  if (stream->carry_len > 0) {
    /* the carried bytes go first; copying the chunk behind them keeps this simple */
    joined = g_malloc(stream->carry_len + len);
    memcpy(joined, stream->carry, stream->carry_len);
    if (len)
      memcpy(joined + stream->carry_len, bytes, len);
    len += stream->carry_len;
    p = joined;
    stream->carry_len = 0;
  }
  gsize used = sanitize_append(out, p, len, stream->flags, FALSE);
  /* what is left is an incomplete UTF-8 sequence (at most 3 bytes) or one '\r' */
  g_assert(len - used < sizeof(stream->carry));
  memcpy(stream->carry, p + used, len - used);
  stream->carry_len = len - used;
}

void hutch_text_stream_finish(HutchTextStream *stream, GString *out) {
  sanitize_append(out, stream->carry, stream->carry_len, stream->flags, TRUE);
  stream->carry_len = 0;
}

void hutch_text_truncate(char *text, gsize max_bytes) {
  if (strlen(text) <= max_bytes)
    return;
  gsize cut = max_bytes;
  /* back to the first byte of the character that would be cut */
  while (cut > 0 && ((guchar)text[cut] & 0xC0) == 0x80)
    cut--;
  text[cut] = '\0';
}
