/* fuzz-broker-head: the credential broker's request head rewrite
 * (hutch_broker_rewrite_head) and its check of where a request goes
 * (hutch_broker_request_is_for), fed the head a hostile guest sends inside an intercepted
 * connection. Properties: a rewritten head is itself a well-formed head (the rewrite accepts
 * it again), ends "\r\n\r\n" and is as long as it says; the real value appears only in the
 * value of a credential header (hutch_broker_credential_headers()), never in the request
 * line or another header, unless the guest sent the value itself; a secret with no value for
 * this destination is never "used". */
#define _GNU_SOURCE
#include <string.h>

#include "broker-private.h"
#include "fuzz.h"

#define VALUE "sk-REAL-VALUE-7f3a9c"
#define PLACEHOLDER "hutch-ph-0123456789abcdef"
#define OTHER_PLACEHOLDER "hutch-ph-fedcba9876543210"

static const char *const credential_headers[] = {
    "Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "X-Auth-Token",
    "Private-Token", NULL,
};

/* Whether the line (without CRLF) is "NAME: ..." for a credential header NAME, the value at
 * offset at (after the colon) */
static gboolean in_credential_value(const char *line, gsize at) {
  for (guint i = 0; credential_headers[i]; i++) {
    gsize n = strlen(credential_headers[i]);
    if (g_ascii_strncasecmp(line, credential_headers[i], n) == 0 && line[n] == ':' && at > n)
      return TRUE;
  }
  return FALSE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *head = (const char *)data;
  /* the list above is the broker's own */
  g_autofree char *names = g_strjoinv(", ", (char **)credential_headers);
  FUZZ_CHECK(strcmp(names, hutch_broker_credential_headers()) == 0);

  HutchBrokerSwap swaps[] = {
      {.secret = "API_KEY", .placeholder = PLACEHOLDER, .value = VALUE},
      {.secret = "OTHER", .placeholder = OTHER_PLACEHOLDER, .value = NULL},
  };
  gsize out_len = 0;
  g_autofree char *out = hutch_broker_rewrite_head(head, size, swaps, 2, &out_len);

  g_autofree char *why = NULL;
  gboolean is_for = hutch_broker_request_is_for(head, size, "api.example.com", 443, &why);
  FUZZ_CHECK(is_for == (why == NULL));
  if (!out) {
    FUZZ_CHECK(!swaps[0].used && !swaps[1].used);
    return 0;
  }
  FUZZ_CHECK(strlen(out) == out_len);
  FUZZ_CHECK(out_len >= 4 && memcmp(out + out_len - 4, "\r\n\r\n", 4) == 0);
  FUZZ_CHECK(!swaps[1].used);

  HutchBrokerSwap again[] = {{.secret = "API_KEY", .placeholder = PLACEHOLDER, .value = NULL}};
  gsize again_len = 0;
  g_autofree char *reparsed = hutch_broker_rewrite_head(out, out_len, again, 1, &again_len);
  FUZZ_CHECK(reparsed != NULL);

  if (memmem(data, size, VALUE, strlen(VALUE)) != NULL)
    return 0; /* the guest sent the value itself: nothing to learn from where it is */
  gboolean seen = FALSE;
  g_auto(GStrv) lines = g_strsplit(out, "\r\n", -1);
  for (guint i = 0; lines[i]; i++) {
    const char *found = strstr(lines[i], VALUE);
    if (!found)
      continue;
    seen = TRUE;
    FUZZ_CHECK(i > 0); /* never in the request line */
    FUZZ_CHECK(in_credential_value(lines[i], (gsize)(found - lines[i])));
  }
  /* in plain text only when it went in (inside Basic it is base64) */
  FUZZ_CHECK(!seen || swaps[0].used);
  return 0;
}
