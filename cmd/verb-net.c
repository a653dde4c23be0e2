/* verb-net.c: hutch net (a VM's egress policy) and hutch egress-helper (its enforcement,
 * started by hutch start). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

int verb_egress_helper(Cli *cli, int argc, char **argv) {
  (void)cli;
  /* egress-helper INSTANCE_DIR RUNTIME_DIR FORWARD... -- PASST_ARGV... (hutch start's words,
   * not a user's: no options) */
  int dashes = 0;
  for (int i = 3; i < argc; i++)
    if (strcmp(argv[i], "--") == 0) {
      dashes = i;
      break;
    }
  if (argc < 4 || dashes == 0 || dashes + 1 >= argc) {
    fprintf(stderr, "hutch: egress-helper is started by hutch start, not by hand\n");
    return EXIT_USAGE;
  }
  g_autoptr(GStrvBuilder) forwards = g_strv_builder_new();
  for (int i = 3; i < dashes; i++)
    g_strv_builder_add(forwards, argv[i]);
  g_auto(GStrv) forward_list = g_strv_builder_end(forwards);
  g_autoptr(GError) error = NULL;
  if (hutch_egress_helper_main(argv[1], argv[2], forward_list, argv + dashes + 1, &error) != 0) {
    fprintf(stderr, "egress helper: %s\n", error ? error->message : "failed");
    return EXIT_FAILED;
  }
  return EXIT_OK;
}

enum { OPT_EGRESS = 1000, OPT_ALLOW, OPT_DENY, OPT_LOG };

static void print_rules(const char *label, JsonArray *rules) {
  printf("%-8s", label);
  guint n = json_array_get_length(rules);
  if (n == 0)
    printf(" -");
  for (guint i = 0; i < n; i++)
    printf("%s %s", i ? "," : "", json_array_get_string_element(rules, i));
  printf("\n");
}

/* The log as text: one line a decision; the guest's names sanitised */
static void print_log(JsonArray *entries) {
  for (guint i = 0; i < json_array_get_length(entries); i++) {
    JsonObject *e = json_array_get_object_element(entries, i);
    const char *name = json_object_get_string_member_with_default(e, "name", NULL);
    const char *address = json_object_get_string_member_with_default(e, "address", NULL);
    g_autofree char *clean_name = name ? hutch_text_sanitize(name, -1, HUTCH_TEXT_LINE) : NULL;
    g_autofree char *reason = hutch_text_sanitize(
        json_object_get_string_member_with_default(e, "reason", ""), -1, HUTCH_TEXT_LINE);
    g_autofree char *where = g_strdup_printf(
        "%s%s%s%s:%" G_GINT64_FORMAT, clean_name ? clean_name : "", clean_name && address ? " (" : "",
        address ? address : "", clean_name && address ? ")" : "",
        json_object_get_int_member_with_default(e, "port", 0));
    printf("%s %-5s %s%s%s\n", json_object_get_string_member_with_default(e, "time", ""),
           json_object_get_string_member_with_default(e, "verdict", ""), where,
           *reason ? ": " : "", reason);
  }
}

int verb_net(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"egress", required_argument, NULL, OPT_EGRESS},
      {"allow", required_argument, NULL, OPT_ALLOW},
      {"deny", required_argument, NULL, OPT_DENY},
      {"log", no_argument, NULL, OPT_LOG},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("net"), "", longopts, 0};
  const char *mode = NULL;
  gboolean log = FALSE;
  g_autoptr(GStrvBuilder) allow = g_strv_builder_new();
  g_autoptr(GStrvBuilder) deny = g_strv_builder_new();
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    switch (c) {
    case OPT_EGRESS:
      mode = optarg;
      break;
    case OPT_ALLOW:
      g_strv_builder_add(allow, optarg);
      break;
    case OPT_DENY:
      g_strv_builder_add(deny, optarg);
      break;
    case OPT_LOG:
      log = TRUE;
      break;
    case 'j':
      cli->json = TRUE;
      break;
    default:
      break;
    }
  }
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  g_auto(GStrv) allow_list = g_strv_builder_end(allow);
  g_auto(GStrv) deny_list = g_strv_builder_end(deny);
  if (log && (mode || allow_list[0] || deny_list[0])) {
    fprintf(stderr, "hutch net: --log shows the log; change the policy in another call\n");
    return EXIT_USAGE;
  }
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (log) {
    g_autoptr(JsonArray) entries = hutch_instance_net_log(cli->ctx, argv[optind], 0, &error);
    if (!entries)
      return cli_error(error);
    if (cli->json)
      cli_print_json_array(entries);
    else
      print_log(entries);
    return EXIT_OK;
  }
  g_autoptr(JsonObject) net =
      hutch_instance_net(cli->ctx, argv[optind], mode, (const char *const *)allow_list,
                         (const char *const *)deny_list, &error);
  if (!net) {
    if (error->code == HUTCH_ERROR_USAGE) {
      fprintf(stderr, "hutch net: %s\n", error->message);
      return EXIT_USAGE;
    }
    return cli_error(error);
  }
  if (cli->json) {
    cli_print_json_object(net);
    return EXIT_OK;
  }
  /* -q: the policy is printed only when it is what was asked, not after a change (but a
   * change the running VM does not have yet is still said, below) */
  gboolean table = !cli->quiet || !(mode || allow_list[0] || deny_list[0]);
  if (table) {
    printf("%-8s %s\n", "egress", json_object_get_string_member(net, "egress"));
    print_rules("allow", json_object_get_array_member(net, "allow"));
    print_rules("deny", json_object_get_array_member(net, "deny"));
    if (json_object_has_member(net, "allowed"))
      printf("%-8s %" G_GINT64_FORMAT " allowed, %" G_GINT64_FORMAT " refused or failed\n",
             "counts", json_object_get_int_member(net, "allowed"),
             json_object_get_int_member(net, "denied"));
  }
  const char *change = json_object_get_string_member(net, "change");
  if (strcmp(change, "applied") == 0 && !cli->quiet)
    fprintf(stderr, "changed: the running VM has it now\n");
  else if (strcmp(change, "next-start") == 0 &&
           (!cli->quiet || json_object_get_boolean_member(net, "running")))
    fprintf(stderr, "changed: the VM gets it at its next start\n");
  return EXIT_OK;
}
