/* verb-template.c: template create, list, rm. */
#include "config.h"

#include <string.h>

#include "cli.h"

static int template_create(Cli *cli, CliOptions *opts, int argc, char **argv, const char *from) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  if (!from)
    return cli_usage_error("template", "create needs --from VM");
  g_autoptr(GError) error = NULL;
  if (!hutch_name_is_valid(argv[optind], &error))
    return cli_usage_error("template", "%s", error->message);
  if (!cli_vm_context(cli))
    return EXIT_FAILED;
  /* Ctrl-C, SIGTERM, SIGHUP: the copy is powered off, so that the create fails, removes it
   * and starts the source again if it ran */
  const char *name = argv[optind];
  g_autofree char *copy = hutch_template_copy_name(name);
  g_autofree char *doing = g_strdup_printf("stopping the copy %s; nothing is kept", copy);
  CliWatch watch;
  cli_watch_begin(&watch, cli, copy, doing);
  gboolean made = hutch_template_create(cli->ctx, name, from, &error);
  int signo = cli_watch_signo(&watch);
  if (made && signo) {
    /* the signal came after the copy was done with: what was asked is nothing */
    g_autoptr(GError) rm_error = NULL;
    if (!hutch_template_remove(cli->ctx, name, &rm_error))
      fprintf(stderr, "hutch: removing template %s: %s\n", name, rm_error->message);
  }
  int rc = made ? EXIT_OK : signo ? EXIT_FAILED : cli_error(error);
  signo = cli_watch_end(&watch);
  return signo ? 128 + signo : rc;
}

static int template_list(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 0, 0))
    return opts->exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) list = hutch_template_list(cli->ctx, &error);
  if (!list)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(list);
    return EXIT_OK;
  }
  printf("%-20s %-16s %-16s %10s  %s\n", "NAME", "FROM VM", "PROFILE", "SIZE", "USED BY");
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *t = json_array_get_object_element(list, i);
    g_autofree char *size =
        g_format_size((guint64)json_object_get_int_member_with_default(t, "size", 0));
    JsonArray *used = json_object_get_array_member(t, "used_by");
    GString *users = g_string_new(NULL);
    for (guint u = 0; u < json_array_get_length(used); u++)
      g_string_append_printf(users, "%s%s", u ? ", " : "", json_array_get_string_element(used, u));
    printf("%-20s %-16s %-16s %10s  %s\n", json_object_get_string_member(t, "name"),
           json_object_get_string_member(t, "source_vm"),
           json_object_get_string_member(t, "profile"), size, users->len ? users->str : "-");
    g_string_free(users, TRUE);
  }
  return EXIT_OK;
}

static int template_rm(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  g_autoptr(GError) error = NULL;
  if (!hutch_name_is_valid(argv[optind], &error))
    return cli_usage_error("template", "%s", error->message);
  if (!cli_context(cli))
    return EXIT_FAILED;
  if (!hutch_template_remove(cli->ctx, argv[optind], &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_template(Cli *cli, int argc, char **argv) {
  enum { OPT_FROM = 1000 };
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"from", required_argument, NULL, OPT_FROM},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("template"), "", longopts, 0};
  const char *from = NULL;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == 'j')
      cli->json = TRUE;
    else if (c == OPT_FROM)
      from = optarg;
  }
  if (c < 0)
    return opts.exit_code;
  if (optind >= argc)
    return cli_usage_error("template", "missing sub-command (create, list or rm)");
  const char *sub = argv[optind++];
  if (from && strcmp(sub, "create") != 0)
    return cli_usage_error("template", "--from goes with create");
  if (strcmp(sub, "create") == 0)
    return template_create(cli, &opts, argc, argv, from);
  if (strcmp(sub, "list") == 0)
    return template_list(cli, &opts, argc, argv);
  if (strcmp(sub, "rm") == 0)
    return template_rm(cli, &opts, argc, argv);
  return cli_usage_error("template", "unknown sub-command '%s'", sub);
}
