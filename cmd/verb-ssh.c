/* verb-ssh.c: shell, cp, ssh-config, logs. */
#include "config.h"

#include <unistd.h>

#include "cli.h"

int verb_shell(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"workdir", required_argument, NULL, 'w'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("shell"), "w:", longopts, 0};
  const char *workdir = NULL;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'w')
      workdir = optarg;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, -1))
    return opts.exit_code;
  const char *name = argv[optind];
  char **command = optind + 1 < argc ? argv + optind + 1 : NULL;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  int status = hutch_shell(cli->ctx, name, workdir, command, &error);
  if (status < 0)
    return cli_error(error);
  return status;
}

int verb_cp(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"recursive", no_argument, NULL, 'r'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("cp"), "r", longopts, 0};
  gboolean recursive = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'r')
      recursive = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 2, 2))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_copy(cli->ctx, argv[optind], argv[optind + 1], recursive, &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_ssh_config(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("ssh-config"), "", NULL, 0};
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    ;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autofree char *text = hutch_ssh_config(cli->ctx, argv[optind], &error);
  if (!text)
    return cli_error(error);
  fputs(text, stdout);
  return EXIT_OK;
}

int verb_logs(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"raw", no_argument, NULL, 'r'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("logs"), "", longopts, 0};
  gboolean raw = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'r')
      raw = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  /* the library writes to the descriptor itself: nothing may wait in stdio's buffer */
  fflush(stdout);
  if (!hutch_logs(cli->ctx, argv[optind], STDOUT_FILENO, raw, &error))
    return cli_error(error);
  return EXIT_OK;
}
