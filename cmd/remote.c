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

/* The long options of create, start and run, as their getopt_long takes them (a unique
 * prefix names one): whether each takes a value. */
static const struct {
  const char *name;
  gboolean value;
} create_long_options[] = {
    {"profile", TRUE},     {"file", TRUE},  {"cpus", TRUE},     {"memory", TRUE},
    {"disk", TRUE},        {"share", TRUE}, {"port", TRUE},     {"egress", TRUE},
    {"template", TRUE},    {"name", TRUE},  {"no-wait", FALSE}, {"no-ports", FALSE},
    {"foreground", FALSE}, {"keep", FALSE}, {"help", FALSE},
};

/* The long option arg ("--NAME" or "--NAME=VALUE") names, as getopt_long reads it: its index
 * in create_long_options, or -1 (none, or several by prefix: the far side's error). */
static int long_option(const char *arg) {
  const char *eq = strchr(arg, '=');
  gsize len = eq ? (gsize)(eq - arg - 2) : strlen(arg) - 2;
  int found = -1;
  for (guint i = 0; i < G_N_ELEMENTS(create_long_options); i++) {
    const char *name = create_long_options[i].name;
    if (strncmp(arg + 2, name, len) != 0)
      continue;
    if (strlen(name) == len)
      return (int)i;
    found = found == -1 ? (int)i : -2;
  }
  return found < 0 ? -1 : found;
}

/* For create, start and run: where -f/--file's value is in argv (*ret_at, 0: none), after
 * *ret_prefix_len bytes of that argument ("-f", "--file=", "--fi="), as the verb's
 * getopt_long would read it. Two are refused (getopt keeps the last, which this side would
 * not have read). */
static gboolean file_option(int argc, char **argv, int *ret_at, gsize *ret_prefix_len,
                            GError **error) {
  *ret_at = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    int at = 0;
    gsize prefix = 0;
    if (strcmp(arg, "--") == 0)
      break;
    if (g_str_has_prefix(arg, "--") && arg[2]) {
      int option = long_option(arg);
      const char *eq = strchr(arg, '=');
      if (option < 0 || !create_long_options[option].value)
        continue;
      if (strcmp(create_long_options[option].name, "file") != 0) {
        if (!eq)
          i++; /* its value */
        continue;
      }
      at = eq ? i : i + 1;
      prefix = eq ? (gsize)(eq + 1 - arg) : 0;
    } else if (arg[0] == '-' && arg[1] && arg[1] != '-') {
      /* short options: p: and f: take a value, the rest of the word or the next one */
      if (arg[1] == 'p') {
        if (!arg[2])
          i++;
        continue;
      }
      if (arg[1] != 'f')
        continue;
      at = arg[2] ? i : i + 1;
      prefix = arg[2] ? 2 : 0;
    } else {
      continue;
    }
    if (at >= argc)
      return TRUE; /* no value: the far side says so */
    if (*ret_at) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "one profile file (-f) on another host: it is read here");
      return FALSE;
    }
    *ret_at = at;
    *ret_prefix_len = prefix;
    if (at > i)
      i++;
  }
  return TRUE;
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
  gsize prefix_len = 0;
  int file_at = 0;
  if ((strcmp(verb->name, "create") == 0 || strcmp(verb->name, "start") == 0 ||
       strcmp(verb->name, "run") == 0) &&
      !file_option(argc, argv, &file_at, &prefix_len, &error))
    return cli_error(error);
  if (file_at > 0) {
    const char *file = argv[file_at] + prefix_len;
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
    g_autofree char *kept = g_strndup(argv[file_at], prefix_len);
    g_free(args->pdata[at]);
    args->pdata[at] = g_strconcat(kept, "-", NULL);
  }
  g_ptr_array_add(args, NULL);
  /* only shell and run read standard input: another verb leaves it to a script's next command */
  gboolean use_stdin = strcmp(verb->name, "shell") == 0 || strcmp(verb->name, "run") == 0;
  /* a terminal at both ends: ssh -t, so that Ctrl-C and the window reach the far side */
  gboolean tty = !input && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  int status =
      hutch_remote_run(remote, (const char *const *)args->pdata, input, use_stdin, tty, &error);
  if (status < 0)
    return cli_error(error);
  return status;
}
