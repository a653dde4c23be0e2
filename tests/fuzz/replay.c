/* replay.c: a fuzz target's main without libFuzzer: feeds it every file of the directories
 * (or the files) named on the command line, in name order, and prints a TAP line for each
 * directory. The corpus (tests/fuzz/corpus/TARGET/) holds seed inputs and every input that
 * once broke a property, so the unit suite fails again if a fix is undone. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"

static int compare_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static guint feed_file(const char *path) {
  gchar *data = NULL;
  gsize len = 0;
  g_autoptr(GError) error = NULL;
  if (!g_file_get_contents(path, &data, &len, &error)) {
    fprintf(stderr, "%s\n", error->message);
    exit(1);
  }
  LLVMFuzzerTestOneInput((const uint8_t *)data, len);
  g_free(data);
  return 1;
}

int main(int argc, char **argv) {
  printf("1..%d\n", argc - 1);
  for (int i = 1; i < argc; i++) {
    guint fed = 0;
    if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
      g_autoptr(GError) error = NULL;
      GDir *dir = g_dir_open(argv[i], 0, &error);
      if (!dir) {
        printf("not ok %d - %s: %s\n", i, argv[i], error->message);
        return 1;
      }
      g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
      const char *name;
      while ((name = g_dir_read_name(dir)))
        g_ptr_array_add(names, g_build_filename(argv[i], name, NULL));
      g_dir_close(dir);
      g_ptr_array_sort(names, compare_names);
      for (guint k = 0; k < names->len; k++)
        fed += feed_file(names->pdata[k]);
    } else {
      fed = feed_file(argv[i]);
    }
    /* an empty corpus would make this test pass without looking */
    if (fed == 0) {
      printf("not ok %d - %s: no input\n", i, argv[i]);
      return 1;
    }
    printf("ok %d - %s: %u inputs, every property held\n", i, argv[i], fed);
  }
  return 0;
}
