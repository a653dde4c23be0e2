/* fuzz.h: what every fuzz target (tests/fuzz/fuzz-*.c) shares. A target is one function,
 * LLVMFuzzerTestOneInput, fed bytes as a hostile guest could send them; it checks the
 * property its parser promises, not only that nothing crashes, and aborts when it does not
 * hold. Built two ways (tests/fuzz/meson.build): with libFuzzer (clang, -Dfuzz=true;
 * tests/fuzz/run.sh), and with replay.c, which feeds it the committed corpus: that is the
 * unit suite's regression test, run under ASan+UBSan and valgrind like every unit test. */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not assert(): checked in every build type. */
#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #cond);                  \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)
