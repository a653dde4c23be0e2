/* verb-profile.c: profile list, profile show. */
#include "config.h"

#include <string.h>

#include "cli.h"

static int profile_list(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 0, 0))
    return opts->exit_code;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) list = hutch_profile_list(&error);
  if (!list)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(list);
    return EXIT_OK;
  }
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *p = json_array_get_object_element(list, i);
    printf("%-16s %s%s\n", json_object_get_string_member(p, "name"),
           json_object_get_string_member(p, "path"),
           json_object_get_boolean_member_with_default(p, "shadowed", FALSE) ? " (shadowed)"
                                                                             : "");
  }
  return EXIT_OK;
}

static int profile_show(Cli *cli, CliOptions *opts, gboolean origin, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) profile = hutch_profile_load(argv[optind], &error);
  if (!profile)
    return cli_error(error);
  if (origin) {
    g_autofree char *text = hutch_profile_to_origins(profile);
    fputs(text, stdout);
    return EXIT_OK;
  }
  g_autofree char *yaml = hutch_profile_to_yaml(profile, &error);
  if (!yaml)
    return cli_error(error);
  fputs(yaml, stdout);
  return EXIT_OK;
}

int verb_profile(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"origin", no_argument, NULL, 'o'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("profile"), "", longopts, 0};
  gboolean origin = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == 'j')
      cli->json = TRUE;
    else if (c == 'o')
      origin = TRUE;
  }
  if (c < 0)
    return opts.exit_code;
  if (optind >= argc)
    return cli_usage_error("profile", "missing sub-command (list or show)");
  const char *sub = argv[optind++];
  if (strcmp(sub, "list") == 0)
    return profile_list(cli, &opts, argc, argv);
  if (strcmp(sub, "show") == 0)
    return profile_show(cli, &opts, origin, argc, argv);
  return cli_usage_error("profile", "unknown sub-command '%s'", sub);
}
