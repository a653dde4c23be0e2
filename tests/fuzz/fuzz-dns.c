/* fuzz-dns: the egress helper's DNS answers (hutch_dns_answer), fed any datagram a guest
 * sends to port 53. Input: an out-size byte, then the query. Properties: the answer fits the
 * buffer; it keeps the query's ID, says it is an answer, and holds at most one address, the
 * one given for the name; only plain names (letters, digits, '-', '_', dots; at most 253
 * characters) are ever looked up. */
#include <string.h>

#include "egress-helper-private.h"
#include "fuzz.h"

#define ADDRESS 0xc6120007u

static guint32 address_of(const char *name, gpointer data) {
  guint *asked = data;
  (*asked)++;
  gsize len = strlen(name);
  FUZZ_CHECK(len > 0 && len <= 253);
  FUZZ_CHECK(name[0] != '.' && name[len - 1] != '.' && strstr(name, "..") == NULL);
  for (const char *c = name; *c; c++)
    FUZZ_CHECK(g_ascii_islower(*c) || g_ascii_isdigit(*c) || *c == '-' || *c == '_' || *c == '.');
  return ADDRESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  /* the helper's own buffer is 1500 bytes; smaller ones test the bound */
  gsize out_size = data[0] >= 128 ? 1500 : data[0];
  const guint8 *msg = data + 1;
  gsize len = size - 1;
  guint8 *out = g_malloc(out_size ? out_size : 1);
  guint asked = 0;
  gsize n = hutch_dns_answer(msg, len, out, out_size, address_of, &asked);
  FUZZ_CHECK(n <= out_size);
  FUZZ_CHECK(asked <= 1);
  if (n > 0) {
    FUZZ_CHECK(n >= 12);
    FUZZ_CHECK(out[0] == msg[0] && out[1] == msg[1]); /* the query's ID */
    FUZZ_CHECK(out[2] & 0x80);                        /* an answer */
    guint answers = (guint)out[6] << 8 | out[7];
    FUZZ_CHECK(answers <= 1);
    FUZZ_CHECK(answers == 0 || asked == 1);
    if (answers == 1) {
      guint32 address;
      memcpy(&address, out + n - 4, 4);
      FUZZ_CHECK(g_ntohl(address) == ADDRESS);
    }
  }
  g_free(out);
  return 0;
}
