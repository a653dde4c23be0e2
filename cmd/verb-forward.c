/* verb-forward.c: forward, ports added to a running VM. */
#include "config.h"

#include <string.h>

#include "cli.h"

static int list_forwards(Cli *cli, const char *name) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) forwards = hutch_forward_list(cli->ctx, name, &error);
  if (!forwards)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(forwards);
    return EXIT_OK;
  }
  for (guint i = 0; i < json_array_get_length(forwards); i++) {
    JsonObject *f = json_array_get_object_element(forwards, i);
    const char *ip = json_object_get_string_member(f, "host_ip");
    /* an IPv6 address in brackets, as in the spec */
    gboolean v6 = strchr(ip, ':') != NULL;
    printf("%s%s%s:%" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT "%s\n", v6 ? "[" : "", ip,
           v6 ? "]" : "", json_object_get_int_member(f, "host_port"),
           json_object_get_int_member(f, "guest_port"),
           json_object_get_int_member(f, "pid") > 0
               ? ""
               : " (closed until the VM's supervisor runs again: the next hutch shell starts it)");
  }
  return EXIT_OK;
}

int verb_forward(Cli *cli, int argc, char **argv) {
  enum { OPT_LIST = 1000, OPT_REMOVE, OPT_JSON };
  /* --json after the verb too, as for list and info */
  static const struct option longopts[] = {
      {"json", no_argument, NULL, OPT_JSON},
      {"list", no_argument, NULL, OPT_LIST},
      {"remove", required_argument, NULL, OPT_REMOVE},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("forward"), "", longopts, 0};
  gboolean list = FALSE;
  const char *remove = NULL;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == OPT_LIST)
      list = TRUE;
    else if (c == OPT_REMOVE)
      remove = optarg;
    else if (c == OPT_JSON)
      cli->json = TRUE;
  }
  if (c < 0)
    return opts.exit_code;
  if (list && remove)
    return cli_usage_error("forward", "--list and --remove exclude each other");
  gboolean adding = !list && !remove;
  if (!cli_expect_args(&opts, argc, argv, adding ? 2 : 1, adding ? 2 : 1))
    return opts.exit_code;
  const char *name = argv[optind];
  guint64 host_port = 0;
  if (remove && !g_ascii_string_to_unsigned(remove, 10, 1, 65535, &host_port, NULL))
    return cli_usage_error("forward", "--remove needs a host port (1-65535), not '%s'", remove);
  if (!cli_context(cli))
    return EXIT_FAILED;
  if (list)
    return list_forwards(cli, name);
  g_autoptr(GError) error = NULL;
  if (remove) {
    if (!hutch_forward_remove(cli->ctx, name, (guint)host_port, &error))
      return cli_error(error);
    return EXIT_OK;
  }
  if (!hutch_forward_add(cli->ctx, name, argv[optind + 1], &error))
    return cli_error(error);
  if (!cli->quiet)
    fprintf(stderr, "forwarding %s to '%s' (hutch forward %s --list)\n", argv[optind + 1], name,
            name);
  return EXIT_OK;
}
