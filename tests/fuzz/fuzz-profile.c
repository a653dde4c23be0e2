/* fuzz-profile: the profile parser (hutch_profile_load_data) and the --port and --share
 * specs (hutch_port_parse, hutch_share_parse), fed any text. A profile is the user's own,
 * but it may come with a project from anywhere. Input: a selector byte, then the text.
 * Properties: a result or an error, never both or neither; an error is one non-empty
 * message, and a profile's error names the file ("fuzz.yaml:LINE:COL: ..." for the YAML
 * itself). */
#include <string.h>

#include "fuzz.h"
#include "profile-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const char *text = (const char *)data + 1;
  gsize len = size - 1;
  g_autoptr(GError) error = NULL;
  switch (data[0] % 3) {
  case 0: {
    /* a NUL in the text: the file would be refused as not text before the parse */
    if (memchr(text, '\0', len))
      return 0;
    g_autoptr(HutchProfile) profile = hutch_profile_load_data(text, len, "fuzz.yaml", &error);
    FUZZ_CHECK((profile == NULL) == (error != NULL));
    if (error) {
      FUZZ_CHECK(error->message && error->message[0]);
    }
    break;
  }
  case 1: {
    g_autofree char *spec = g_strndup(text, len);
    HutchPort *port = hutch_port_parse(spec, &error);
    FUZZ_CHECK((port == NULL) == (error != NULL));
    if (port)
      hutch_port_free(port);
    break;
  }
  default: {
    g_autofree char *spec = g_strndup(text, len);
    HutchShare *share = hutch_share_parse(spec, &error);
    FUZZ_CHECK((share == NULL) == (error != NULL));
    if (share)
      hutch_share_free(share);
    break;
  }
  }
  return 0;
}
