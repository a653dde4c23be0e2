/* text-private.h: the one sanitiser for text from a guest (which may be hostile) before it
 * reaches a terminal or hutch's records. hutch_text_sanitize() (public, in hutch.h) works on
 * a whole buffer; the stream below on a sequence of chunks, with the same result. */
#pragma once

#include "hutch.h"

/* Text arriving in chunks (a log file, an SSH channel): a UTF-8 sequence or a "\r\n" split
 * between two chunks is carried over to the next, so that the output is the same as
 * hutch_text_sanitize() of all chunks at once. At most 3 bytes are carried. */
typedef struct {
  HutchTextFlags flags;
  guchar carry[4];
  gsize carry_len;
} HutchTextStream;

void hutch_text_stream_init(HutchTextStream *stream, HutchTextFlags flags);
/* Appends the sanitised text of bytes to out. */
void hutch_text_stream_feed(HutchTextStream *stream, const char *bytes, gsize len, GString *out);
/* The end of the text: what was carried over is judged as it stands (an incomplete sequence
 * becomes one '?' per byte) and appended to out. The stream can be fed again afterwards. */
void hutch_text_stream_finish(HutchTextStream *stream, GString *out);

/* Cuts text (valid UTF-8, as hutch_text_sanitize makes it) to at most max_bytes, at a
 * character boundary. */
void hutch_text_truncate(char *text, gsize max_bytes);
