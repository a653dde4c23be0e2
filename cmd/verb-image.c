/* verb-image.c: image build, pull, list, rm. */
#include "config.h"

#include <string.h>

#include "cli.h"

static int image_build(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) profile = hutch_profile_load(argv[optind], &error);
  if (!profile)
    return cli_error(error);
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autofree char *key = hutch_image_build(cli->ctx, profile, &error);
  if (!key)
    return cli_error(error);
  printf("%s\n", key);
  return EXIT_OK;
}

static int image_pull(Cli *cli, CliOptions *opts, int argc, char **argv, const char *digest) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  if (!digest)
    return cli_usage_error("image", "pull needs --digest sha256:HEX or sha512:HEX");
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autofree char *key = hutch_image_pull(cli->ctx, argv[optind], digest, &error);
  if (!key)
    return cli_error(error);
  printf("%s\n", key);
  return EXIT_OK;
}

static int image_list(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 0, 0))
    return opts->exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) list = hutch_image_list(cli->ctx, &error);
  if (!list)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(list);
    return EXIT_OK;
  }
  printf("%-24s %-6s %10s  %s\n", "KEY", "KIND", "SIZE", "SOURCE");
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *image = json_array_get_object_element(list, i);
    g_autofree char *size = g_format_size(
        (guint64)json_object_get_int_member_with_default(image, "size", 0));
    printf("%-24s %-6s %10s  %s\n", json_object_get_string_member(image, "key"),
           json_object_get_string_member_with_default(image, "kind", "-"), size,
           json_object_get_string_member_with_default(image, "source", "-"));
  }
  return EXIT_OK;
}

static int image_rm(Cli *cli, CliOptions *opts, int argc, char **argv) {
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_image_remove(cli->ctx, argv[optind], &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_image(Cli *cli, int argc, char **argv) {
  enum { OPT_DIGEST = 1000 };
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"digest", required_argument, NULL, OPT_DIGEST},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("image"), "", longopts, 0};
  const char *digest = NULL;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == 'j')
      cli->json = TRUE;
    else if (c == OPT_DIGEST)
      digest = optarg;
  }
  if (c < 0)
    return opts.exit_code;
  if (optind >= argc)
    return cli_usage_error("image", "missing sub-command (build, pull, list or rm)");
  const char *sub = argv[optind++];
  if (digest && strcmp(sub, "pull") != 0)
    return cli_usage_error("image", "--digest goes with pull");
  if (strcmp(sub, "build") == 0)
    return image_build(cli, &opts, argc, argv);
  if (strcmp(sub, "pull") == 0)
    return image_pull(cli, &opts, argc, argv, digest);
  if (strcmp(sub, "list") == 0)
    return image_list(cli, &opts, argc, argv);
  if (strcmp(sub, "rm") == 0)
    return image_rm(cli, &opts, argc, argv);
  return cli_usage_error("image", "unknown sub-command '%s'", sub);
}
