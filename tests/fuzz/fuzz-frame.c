/* fuzz-frame: the supervisor socket's framing (hutch_frame_peek, hutch_frame_consume), fed
 * any bytes a peer sends. Properties: a frame's payload lies inside what was received and
 * within HUTCH_FRAME_MAX; consuming frames one by one never reads past the buffer, and a
 * frame appended again (hutch_frame_append) reads back the same. */
#include <string.h>

#include "client-private.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  g_autoptr(GByteArray) in = g_byte_array_new();
  g_byte_array_append(in, data, size);
  for (;;) {
    char type = 0;
    const guint8 *payload = NULL;
    gsize len = 0;
    int got = hutch_frame_peek(in, &type, &payload, &len);
    if (got <= 0)
      break;
    FUZZ_CHECK(len <= HUTCH_FRAME_MAX);
    FUZZ_CHECK(payload >= in->data && payload + len <= in->data + in->len);
    g_autoptr(GByteArray) again = g_byte_array_new();
    hutch_frame_append(again, type, payload, len);
    char type2 = 0;
    const guint8 *payload2 = NULL;
    gsize len2 = 0;
    FUZZ_CHECK(hutch_frame_peek(again, &type2, &payload2, &len2) == 1);
    FUZZ_CHECK(type2 == type && len2 == len && memcmp(payload2, payload, len) == 0);
    gsize before = in->len;
    hutch_frame_consume(in, len);
    FUZZ_CHECK(in->len < before);
  }
  return 0;
}
