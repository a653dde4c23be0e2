/* cli-error.c: how the hutch commands print an error; shared by the full CLI and the front
 * (front.c), so that both print the same lines. */
#include "config.h"

#include "cli.h"

int cli_error(GError *error) {
  /* Messages may quote the guest (a console tail, a step's reason, a path it named): no
   * escape sequence or other control character of theirs reaches the terminal. */
  g_autofree char *message = hutch_text_sanitize(error->message, -1, HUTCH_TEXT_LINES);
  /* One line: multi-line messages (a provisioning log tail) keep their lines after the
   * first, indented. */
  g_auto(GStrv) lines = g_strsplit(message, "\n", -1);
  fprintf(stderr, "hutch: %s\n", lines[0]);
  for (int i = 1; lines[i]; i++)
    if (*lines[i])
      fprintf(stderr, "  %s\n", lines[i]);
  return g_error_matches(error, HUTCH_ERROR, HUTCH_ERROR_USAGE) ? EXIT_USAGE : EXIT_FAILED;
}
