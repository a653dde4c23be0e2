/* remote.c: `hutch -c qemu+ssh://[USER@]HOST[:PORT]/session VERB ...`: the verb runs on
 * that host, through ssh (lib/remote.c says why). What only this side can read goes with it:
 * a profile file (`-f FILE`, read and checked here, sent expanded on the far side's standard
 * input) and what `cp` copies. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* The most a profile read from standard input may hold. */
#define PROFILE_STDIN_MAX (1024 * 1024)

char *cli_read_stdin_profile(GError **error) {
  g_autoptr(GString) text = g_string_new(NULL);
  char buf[65536];
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "reading the profile from standard "
                  "input: %s",
                  g_strerror(errno));
      return NULL;
    }
    if (n == 0)
      break;
    if (text->len + (gsize)n > PROFILE_STDIN_MAX) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "the profile on standard input is longer than %d bytes", PROFILE_STDIN_MAX);
      return NULL;
    }
    g_string_append_len(text, buf, n);
  }
  return g_string_free(g_steal_pointer(&text), FALSE);
}

/* For create, start and run: the index in argv of -f/--file's value (0: none), as the verb's
 * getopt would see it (operands after "--" are not options; -p, --profile and the other
 * options that take a value skip it). */
static int file_option(int argc, char **argv, gboolean *ret_joined) {
  static const char *const with_value[] = {"-p",         "--profile", "--cpus", "--memory",
                                           "--disk",     "--share",   "--port", "--egress",
                                           "--template", "--name",    NULL};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0)
      return 0;
    if ((strcmp(arg, "-f") == 0 || strcmp(arg, "--file") == 0) && i + 1 < argc) {
      *ret_joined = FALSE;
      return i + 1;
    }
    if (g_str_has_prefix(arg, "--file=") || (g_str_has_prefix(arg, "-f") && arg[2])) {
      *ret_joined = TRUE;
      return i;
    }
    if (g_strv_contains(with_value, arg))
      i++;
  }
  return 0;
}

int cli_remote(Cli *cli, const char *uri, const Verb *verb, int argc, char **argv) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchRemote) remote = hutch_remote_new(uri, &error);
  if (!remote)
    return cli_error(error);
  if (strcmp(verb->name, "supervise") == 0 || strcmp(verb->name, "egress-helper") == 0)
    return cli_usage_error(verb->name, "hutch starts it itself, on the VM's own host");
  if (strcmp(verb->name, "ssh-config") == 0)
    return cli_usage_error(verb->name,
                           "not for another host's VMs: `hutch -c %s shell NAME` reaches them, "
                           "or run ssh-config on that host",
                           uri);
  if (strcmp(verb->name, "cp") == 0) {
    cli->remote = remote;
    int status = verb->run(cli, argc, argv);
    cli->remote = NULL;
    return status;
  }
  g_autoptr(GPtrArray) args = g_ptr_array_new_with_free_func(g_free);
  if (cli->json)
    g_ptr_array_add(args, g_strdup("--json"));
  if (cli->quiet)
    g_ptr_array_add(args, g_strdup("-q"));
  for (int i = 0; i < argc; i++)
    g_ptr_array_add(args, g_strdup(argv[i]));
  /* a profile file is this host's: read and checked here (its errors name it), its
   * expanded form goes on the far side's standard input */
  g_autoptr(GBytes) input = NULL;
  gboolean joined = FALSE;
  int file_at = 0;
  if (strcmp(verb->name, "create") == 0 || strcmp(verb->name, "start") == 0 ||
      strcmp(verb->name, "run") == 0)
    file_at = file_option(argc, argv, &joined);
  if (file_at > 0) {
    const char *file = argv[file_at];
    if (joined)
      file = g_str_has_prefix(file, "--file=") ? file + strlen("--file=") : file + 2;
    g_autoptr(HutchProfile) profile = NULL;
    if (strcmp(file, "-") == 0) {
      g_autofree char *text = cli_read_stdin_profile(&error);
      if (text)
        profile = hutch_profile_load_text(text, strlen(text), "<stdin>", &error);
    } else {
      profile = hutch_profile_load(file, &error);
    }
    g_autofree char *yaml = profile ? hutch_profile_to_yaml(profile, &error) : NULL;
    if (!yaml)
      return cli_error(error);
    gsize yaml_len = strlen(yaml);
    input = g_bytes_new_take(g_steal_pointer(&yaml), yaml_len);
    guint at = (guint)file_at + (cli->json ? 1 : 0) + (cli->quiet ? 1 : 0);
    g_free(args->pdata[at]);
    args->pdata[at] = g_strdup(joined ? "--file=-" : "-");
  }
  g_ptr_array_add(args, NULL);
  /* a terminal at both ends: ssh -t, so that Ctrl-C and the window reach the far side */
  gboolean tty = !input && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  int status = hutch_remote_run(remote, (const char *const *)args->pdata, input, tty, &error);
  if (status < 0)
    return cli_error(error);
  return status;
}
