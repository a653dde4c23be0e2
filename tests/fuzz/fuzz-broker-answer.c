/* fuzz-broker-answer: the broker's filter of an intercepted answer against the values that
 * went into its request (hutch_broker_answer_filter), fed an answer in chunks of any sizes
 * (the upstream's TLS records, which a guest can shift by the length of what it makes a
 * server echo). Input: a chunk-size byte, then the answer. Properties: what goes to the
 * guest never holds a value or a base64 form of one, not even their first bytes split from
 * the rest; when the answer holds one, the guest gets exactly the bytes before the first
 * (for a base64 form, before the group ahead of it); when it holds none, the guest gets all
 * of it (with what is held at the end). */
#define _GNU_SOURCE
#include <string.h>

#include "broker-private.h"
#include "fuzz.h"

static const HutchBrokerSwap swaps[] = {
    {.secret = "A", .placeholder = "ph-a", .value = "secret-one", .used = TRUE},
    {.secret = "B", .placeholder = "ph-b", .value = "sec-two", .used = TRUE},
    {.secret = "C", .placeholder = "ph-c", .value = "not-sent", .used = FALSE},
};

/* Where the first used value or base64 form of one (a value of 8 bytes or more, encoded at
 * any alignment: the broker sends values in "Authorization: Basic") starts in the len bytes
 * at data, len when none; with_lead: where the group ahead of a form starts, which may
 * encode the value's first bytes (the filter cuts there when it sees both at once) */
static gsize first_value(const guint8 *data, gsize len, gboolean with_lead) {
  gsize first = len;
  if (len == 0)
    return 0; /* (an empty GByteArray's data is NULL, which memmem must not get) */
  for (guint i = 0; i < G_N_ELEMENTS(swaps); i++) {
    if (!swaps[i].used)
      continue;
    gsize value_len = strlen(swaps[i].value);
    const guint8 *at = memmem(data, len, swaps[i].value, value_len);
    if (at && (gsize)(at - data) < first)
      first = (gsize)(at - data);
    for (gsize skip = 0; value_len >= 8 && skip < 3; skip++) {
      g_autofree char *form =
          g_base64_encode((const guchar *)swaps[i].value + skip, (value_len - skip) / 3 * 3);
      at = memmem(data, len, form, strlen(form));
      gsize lead = skip && with_lead ? 4 : 0;
      if (at && (gsize)(at - data) < first + lead)
        first = (gsize)(at - data) > lead ? (gsize)(at - data) - lead : 0;
    }
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
    FUZZ_CHECK(first_value(released->data, released->len, FALSE) == released->len);
    g_autoptr(GByteArray) both = g_byte_array_new();
    g_byte_array_append(both, released->data, released->len);
    g_byte_array_append(both, held->data, held->len);
    gsize in_both = first_value(both->data, both->len, FALSE);
    FUZZ_CHECK(in_both >= released->len);
  }
  gsize first = first_value(answer, len, FALSE);
  if (echoed) {
    /* the bytes before the first value: exactly (a raw value); for a base64 form, the group
     * ahead of it too, unless that had already gone in an earlier chunk */
    FUZZ_CHECK(first < len);
    FUZZ_CHECK(released->len >= first_value(answer, len, TRUE) && released->len <= first &&
               (released->len == 0 || memcmp(released->data, answer, released->len) == 0));
  } else {
    FUZZ_CHECK(first == len);
    g_byte_array_append(released, held->data, held->len); /* the answer's end */
    FUZZ_CHECK(released->len == len && (len == 0 || memcmp(released->data, answer, len) == 0));
  }
  return 0;
}
