/* verb-doctor.c: doctor. */
#include "config.h"

#include <string.h>

#include "cli.h"

int verb_doctor(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("doctor"), "", longopts, 0};
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'j')
      cli->json = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 0, 0))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(JsonArray) results = hutch_doctor(cli->ctx);
  guint problems = 0;
  for (guint i = 0; i < json_array_get_length(results); i++) {
    JsonObject *r = json_array_get_object_element(results, i);
    if (!json_object_get_boolean_member(r, "ok"))
      problems++;
    if (cli->json)
      continue;
    const char *severity = json_object_get_string_member(r, "severity");
    printf("%-8s %-12s %s\n", strcmp(severity, "info") == 0 ? "ok" : severity,
           json_object_get_string_member(r, "check"), json_object_get_string_member(r, "detail"));
    const char *fix = json_object_get_string_member_with_default(r, "fix", NULL);
    if (fix)
      printf("%-8s %-12s fix: %s\n", "", "", fix);
  }
  if (cli->json)
    cli_print_json_array(results);
  else if (problems)
    printf("\n%u problem%s found\n", problems, problems == 1 ? "" : "s");
  else
    printf("\nall is well\n");
  return problems ? EXIT_FAILED : EXIT_OK;
}
