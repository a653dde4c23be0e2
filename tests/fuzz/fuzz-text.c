/* fuzz-text: the sanitiser of everything a guest prints (hutch_text_sanitize, the stream,
 * hutch_text_truncate). Input: a flags byte, a chunk size byte, a cut byte, then the text.
 * Properties: valid UTF-8 with no control character but what the flags keep, and no
 * bidirectional override; the stream, fed in chunks, gives exactly the whole buffer's
 * result; a cut stays valid UTF-8 within its bound. */
#include <string.h>

#include "fuzz.h"
#include "text-private.h"

static void check_printable(const char *text, HutchTextFlags flags) {
  FUZZ_CHECK(g_utf8_validate(text, -1, NULL));
  for (const char *p = text; *p; p = g_utf8_next_char(p)) {
    gunichar c = g_utf8_get_char(p);
    gboolean kept = (flags & HUTCH_TEXT_LINES) && (c == '\n' || c == '\t');
    FUZZ_CHECK(kept || (c >= 0x20 && c != 0x7f));
    FUZZ_CHECK(!(c >= 0x80 && c <= 0x9f));
    FUZZ_CHECK(!(c >= 0x202a && c <= 0x202e) && !(c >= 0x2066 && c <= 0x2069));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  HutchTextFlags flags = (data[0] & 1) ? HUTCH_TEXT_LINES : HUTCH_TEXT_LINE;
  gsize chunk = 1 + data[1] % 16;
  gsize cut = data[2];
  const char *text = (const char *)data + 3;
  gsize len = size - 3;

  g_autofree char *whole = hutch_text_sanitize(text, (gssize)len, flags);
  check_printable(whole, flags);

  HutchTextStream stream;
  hutch_text_stream_init(&stream, flags);
  g_autoptr(GString) streamed = g_string_new(NULL);
  for (gsize at = 0; at < len; at += chunk)
    hutch_text_stream_feed(&stream, text + at, MIN(chunk, len - at), streamed);
  hutch_text_stream_finish(&stream, streamed);
  FUZZ_CHECK(strcmp(streamed->str, whole) == 0);

  g_autofree char *cut_text = g_strdup(whole);
  hutch_text_truncate(cut_text, cut);
  FUZZ_CHECK(strlen(cut_text) <= cut);
  FUZZ_CHECK(g_utf8_validate(cut_text, -1, NULL));
  FUZZ_CHECK(strncmp(cut_text, whole, strlen(cut_text)) == 0);
  return 0;
}
