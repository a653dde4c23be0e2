/* verb-snapshot.c: snapshot create, list, revert, delete. */
#include "config.h"

#include <string.h>

#include "cli.h"

static int snapshot_list(Cli *cli, const char *name, gboolean names_only) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) list = hutch_snapshot_list(cli->ctx, name, &error);
  if (!list)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(list);
    return EXIT_OK;
  }
  if (!names_only && json_array_get_length(list) > 0)
    printf("%-20s %-21s %s\n", "SNAPSHOT", "CREATED", "DESCRIPTION");
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *snap = json_array_get_object_element(list, i);
    const char *snap_name = json_object_get_string_member(snap, "name");
    if (names_only) {
      printf("%s\n", snap_name);
      continue;
    }
    printf("%-20s %-21s %s%s\n", snap_name, json_object_get_string_member(snap, "created"),
           json_object_get_string_member(snap, "description"),
           json_object_get_boolean_member(snap, "current") ? " (current)" : "");
  }
  return EXIT_OK;
}

int verb_snapshot(Cli *cli, int argc, char **argv) {
  enum { OPT_JSON = 1000, OPT_NAME };
  static const struct option longopts[] = {
      {"json", no_argument, NULL, OPT_JSON},
      {"name", no_argument, NULL, OPT_NAME},
      {"description", required_argument, NULL, 'd'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("snapshot"), "d:", longopts, 0};
  const char *description = NULL;
  gboolean names_only = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == OPT_JSON)
      cli->json = TRUE;
    else if (c == OPT_NAME)
      names_only = TRUE;
    else if (c == 'd')
      description = optarg;
  }
  if (c < 0)
    return opts.exit_code;
  if (optind >= argc)
    return cli_usage_error("snapshot", "missing sub-command (create, list, revert or delete)");
  const char *sub = argv[optind++];
  gboolean is_list = strcmp(sub, "list") == 0;
  if (!is_list && strcmp(sub, "create") != 0 && strcmp(sub, "revert") != 0 &&
      strcmp(sub, "delete") != 0)
    return cli_usage_error("snapshot", "unknown sub-command '%s'", sub);
  if (description && strcmp(sub, "create") != 0)
    return cli_usage_error("snapshot", "--description goes with create only");
  if (!cli_expect_args(&opts, argc, argv, is_list ? 1 : 2, is_list ? 1 : 2))
    return opts.exit_code;
  const char *name = argv[optind];
  const char *snapshot = is_list ? NULL : argv[optind + 1];
  if (!cli_context(cli))
    return EXIT_FAILED;

  g_autoptr(GError) error = NULL;
  gboolean ok;
  if (is_list)
    return snapshot_list(cli, name, names_only);
  if (strcmp(sub, "create") == 0)
    ok = hutch_snapshot_create(cli->ctx, name, snapshot, description, &error);
  else if (strcmp(sub, "revert") == 0)
    ok = hutch_snapshot_revert(cli->ctx, name, snapshot, &error);
  else
    ok = hutch_snapshot_delete(cli->ctx, name, snapshot, &error);
  return ok ? EXIT_OK : cli_error(error);
}
