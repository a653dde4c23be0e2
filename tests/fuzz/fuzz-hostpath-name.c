/* fuzz-hostpath-name: the check every name a guest hands hutch passes before it names a
 * file on the host (an SFTP directory entry, a REALPATH answer's last component:
 * hutch_hostpath_name_is_safe), and how such a name is shown (hutch_hostpath_name_display).
 * Properties: a safe name is one plain entry name (not empty, not "." or "..", no '/' or
 * NUL); what is shown is printable ASCII only and bounded. */
#include <string.h>

#include "fuzz.h"
#include "hostpath-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *name = (const char *)data;
  if (hutch_hostpath_name_is_safe(name, size)) {
    FUZZ_CHECK(size > 0);
    FUZZ_CHECK(memchr(name, '/', size) == NULL && memchr(name, '\0', size) == NULL);
    FUZZ_CHECK(!(size == 1 && name[0] == '.'));
    FUZZ_CHECK(!(size == 2 && name[0] == '.' && name[1] == '.'));
  }
  g_autofree char *shown = hutch_hostpath_name_display(name, size);
  FUZZ_CHECK(shown != NULL);
  /* 64 bytes at most, each at most "\xHH", and a mark that more was cut */
  FUZZ_CHECK(strlen(shown) <= 64 * 4 + 16);
  for (const char *c = shown; *c; c++)
    FUZZ_CHECK(*c >= 0x20 && *c < 0x7f);
  return 0;
}
