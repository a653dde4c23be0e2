/* guest.c: reaching into a running instance: shell, cp, ssh-config. */
#include "config.h"

#include <unistd.h>

#include "instance-private.h"

int hutch_shell(HutchContext *ctx, const char *name, const char *workdir, char **argv,
                GError **error) {
  g_autoptr(HutchSsh) ssh = hutch_instance_connect(ctx, name, error);
  if (!ssh)
    return -1;
  gboolean interactive = !argv || !argv[0];
  g_autofree char *command = NULL;
  if (!interactive) {
    g_autofree char *quoted = hutch_shell_quote_argv(argv);
    if (workdir) {
      char *dir_argv[] = {(char *)workdir, NULL};
      g_autofree char *dir = hutch_shell_quote_argv(dir_argv);
      command = g_strdup_printf("cd %s && exec %s", dir, quoted);
    } else {
      command = g_steal_pointer(&quoted);
    }
  } else if (workdir) {
    char *dir_argv[] = {(char *)workdir, NULL};
    g_autofree char *dir = hutch_shell_quote_argv(dir_argv);
    /* a login shell that starts in workdir */
    command = g_strdup_printf("cd %s && exec \"$SHELL\" -l", dir);
  }
  /* A terminal for the interactive shell, and for a command only when stdin is one (so
   * `hutch shell dev -- vim` works and `... -- cat < file` stays byte-exact). */
  gboolean pty = interactive || (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
  int status = hutch_ssh_exec_interactive(ssh, command, pty, error);
  if (status < 0)
    g_prefix_error(error, "%s: ", name);
  return status;
}

/* "NAME:PATH" -> name and path, when NAME is a valid instance name. A path with a '/' before
 * the ':' is local ("./a:b"). */
static gboolean split_remote(const char *spec, char **ret_name, char **ret_path) {
  const char *colon = strchr(spec, ':');
  if (!colon || colon == spec)
    return FALSE;
  g_autofree char *name = g_strndup(spec, colon - spec);
  if (strchr(name, '/') || !hutch_name_is_valid(name, NULL))
    return FALSE;
  *ret_name = g_steal_pointer(&name);
  *ret_path = g_strdup(*(colon + 1) ? colon + 1 : ".");
  return TRUE;
}

gboolean hutch_copy(HutchContext *ctx, const char *src, const char *dst, gboolean recursive,
                    GError **error) {
  g_autofree char *src_name = NULL, *src_path = NULL, *dst_name = NULL, *dst_path = NULL;
  gboolean src_remote = split_remote(src, &src_name, &src_path);
  gboolean dst_remote = split_remote(dst, &dst_name, &dst_path);
  if (src_remote == dst_remote) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "exactly one of '%s' and '%s' must be NAME:PATH", src, dst);
    return FALSE;
  }
  g_autoptr(HutchSsh) ssh =
      hutch_instance_connect(ctx, src_remote ? src_name : dst_name, error);
  if (!ssh)
    return FALSE;
  if (src_remote)
    return hutch_ssh_download(ssh, src_path, dst, recursive, error);
  return hutch_ssh_upload(ssh, src, dst_path, recursive, error);
}

char *hutch_ssh_config(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  if (!hutch_instance_is_active(instance) || instance->meta->ssh_port == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "'%s' is not running: its SSH port is chosen at start (hutch start %s)", name,
                name);
    return NULL;
  }
  g_autofree char *host_key = hutch_instance_host_key(instance, error);
  if (!host_key)
    return NULL;
  g_autofree char *client_key = hutch_ssh_client_key(NULL, error);
  if (!client_key)
    return NULL;
  /* OpenSSH looks a non-default port up as "[host]:port" in known_hosts. The file lives in
   * the instance directory and is rewritten because the port changes at each start. */
  g_autofree char *known_hosts =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_KNOWN_HOSTS, NULL);
  g_autofree char *line =
      g_strdup_printf("[127.0.0.1]:%u %s\n", instance->meta->ssh_port, host_key);
  if (!hutch_write_file(known_hosts, line, strlen(line), 0600, error))
    return NULL;
  return g_strdup_printf("Host %s\n"
                         "  HostName 127.0.0.1\n"
                         "  Port %u\n"
                         "  User %s\n"
                         "  IdentityFile \"%s\"\n"
                         "  IdentitiesOnly yes\n"
                         "  UserKnownHostsFile \"%s\"\n"
                         "  StrictHostKeyChecking yes\n"
                         "  ForwardAgent no\n"
                         "  ForwardX11 no\n"
                         "  LogLevel ERROR\n",
                         name, instance->meta->ssh_port, instance->meta->guest_user,
                         client_key, known_hosts);
}

char *hutch_logs(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  g_autofree char *console_path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CONSOLE, NULL);
  g_autofree char *console = NULL;
  GString *out = g_string_new(NULL);
  g_string_append_printf(out, "==> console (%s) <==\n", console_path);
  if (g_file_get_contents(console_path, &console, NULL, NULL))
    g_string_append(out, console);
  else
    g_string_append(out, "(no console output yet)\n");
  if (hutch_instance_is_active(instance)) {
    g_autoptr(GError) ssh_error = NULL;
    g_autoptr(HutchSsh) ssh = hutch_instance_connect(ctx, name, &ssh_error);
    g_autofree char *guest_logs = NULL;
    if (ssh)
      hutch_ssh_exec_capture(ssh,
                             "for f in /var/log/cloud-init-output.log /var/log/hutch/steps/*.log;"
                             " do [ -r \"$f\" ] || sudo -n test -r \"$f\" || continue;"
                             " echo \"==> $f <==\"; sudo -n cat \"$f\" 2>/dev/null || cat \"$f\"; done",
                             NULL, &guest_logs, NULL, &ssh_error);
    if (guest_logs)
      g_string_append(out, guest_logs);
    else
      g_string_append_printf(out, "==> guest logs <==\n(unavailable: %s)\n",
                             ssh_error ? ssh_error->message : "no SSH");
  }
  return g_string_free(out, FALSE);
}
