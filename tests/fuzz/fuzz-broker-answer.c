/* fuzz-broker-answer: the broker's filter of an intercepted answer against the values that
 * went into its request (hutch_broker_answer_filter), fed an answer in chunks of any sizes
 * (the upstream's TLS records, which a guest can shift by the length of what it makes a
 * server echo). Input: a chunk-size byte, then the answer. Properties: what goes to the
 * guest never holds a value, not even its first bytes split from the rest; when the answer
 * holds a value, the guest gets exactly the bytes before the first one; when it holds none,
 * the guest gets all of it (with what is held at the end). */
#define _GNU_SOURCE
#include <string.h>

#include "broker-private.h"
#include "fuzz.h"

static const HutchBrokerSwap swaps[] = {
    {.secret = "A", .placeholder = "ph-a", .value = "secret-one", .used = TRUE},
    {.secret = "B", .placeholder = "ph-b", .value = "sec-two", .used = TRUE},
    {.secret = "C", .placeholder = "ph-c", .value = "not-sent", .used = FALSE},
};

/* Where the first used value in the len bytes at data starts, or len */
static gsize first_value(const guint8 *data, gsize len) {
  gsize first = len;
  if (len == 0)
    return 0; /* (an empty GByteArray's data is NULL, which memmem must not get) */
  for (guint i = 0; i < G_N_ELEMENTS(swaps); i++) {
    if (!swaps[i].used)
      continue;
    const guint8 *at = memmem(data, len, swaps[i].value, strlen(swaps[i].value));
    if (at && (gsize)(at - data) < first)
      first = (gsize)(at - data);
  }
  return first;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  guint chunk_seed = data[0];
  const guint8 *answer = data + 1;
  gsize len = size - 1;
  g_autoptr(GByteArray) held = g_byte_array_new();
  g_autoptr(GByteArray) released = g_byte_array_new();
  const char *echoed = NULL;
  gsize at = 0;
  for (guint k = 0; at < len && !echoed; k++) {
    /* chunk sizes from 1 to 16, varied by the seed byte */
    gsize chunk = MIN(len - at, 1 + (chunk_seed + k * 7) % 16);
    gsize count =
        hutch_broker_answer_filter(swaps, G_N_ELEMENTS(swaps), held, answer + at, chunk, &echoed);
    FUZZ_CHECK(count <= held->len);
    g_byte_array_append(released, held->data, (guint)count);
    g_byte_array_remove_range(held, 0, (guint)count);
    at += chunk;
    /* nothing released so far holds a value, nor could a value start in it and go on in
     * what is still held */
    FUZZ_CHECK(first_value(released->data, released->len) == released->len);
    g_autoptr(GByteArray) both = g_byte_array_new();
    g_byte_array_append(both, released->data, released->len);
    g_byte_array_append(both, held->data, held->len);
    gsize in_both = first_value(both->data, both->len);
    FUZZ_CHECK(in_both >= released->len);
  }
  gsize first = first_value(answer, len);
  if (echoed) {
    FUZZ_CHECK(first < len);
    FUZZ_CHECK(released->len == first &&
               (first == 0 || memcmp(released->data, answer, first) == 0));
  } else {
    FUZZ_CHECK(first == len);
    g_byte_array_append(released, held->data, held->len); /* the answer's end */
    FUZZ_CHECK(released->len == len && (len == 0 || memcmp(released->data, answer, len) == 0));
  }
  return 0;
}
