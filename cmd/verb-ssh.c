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
  g_autoptr(GError) error = NULL;
  if (cli->remote) {
    if (!hutch_remote_copy(cli->remote, argv[optind], argv[optind + 1], recursive, cli->quiet,
                           &error))
      return cli_error(error);
    return EXIT_OK;
  }
  if (!cli_context(cli))
    return EXIT_FAILED;
  if (!hutch_copy(cli->ctx, argv[optind], argv[optind + 1], recursive, &error))
    return cli_error(error);
  return EXIT_OK;
}

/* ssh-config --install / --uninstall */
static int ssh_config_install(Cli *cli, gboolean install) {
  g_autoptr(GError) error = NULL;
  g_autofree char *config = NULL;
  gboolean changed = FALSE;
  if (install ? !hutch_ssh_config_install(cli->ctx, &config, &changed, &error)
              : !hutch_ssh_config_uninstall(cli->ctx, &config, &changed, &error))
    return cli_error(error);
  if (cli->quiet)
    return EXIT_OK;
  if (install && changed)
    printf("added an Include of hutch's ssh_config at the top of %s; every running VM is a "
           "Host there (ssh NAME, VS Code Remote-SSH). Undo: hutch ssh-config --uninstall\n",
           config);
  else if (install)
    printf("%s includes hutch's ssh_config already; it is up to date\n", config);
  else if (changed)
    printf("removed hutch's Include line from %s\n", config);
  else
    printf("%s has no Include line of hutch's; nothing to remove\n", config);
  return EXIT_OK;
}

int verb_ssh_config(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"install", no_argument, NULL, 'I'},
      {"uninstall", no_argument, NULL, 'U'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("ssh-config"), "", longopts, 0};
  int mode = 0;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (mode && mode != c)
      return cli_usage_error("ssh-config", "--install and --uninstall exclude each other");
    mode = c;
  }
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, mode ? 0 : 1, mode ? 0 : 1))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  if (mode)
    return ssh_config_install(cli, mode == 'I');
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
