/* guest.c: reaching into a running instance: shell, cp, ssh-config, logs. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixoutputstream.h>
#include <unistd.h>

#include "instance-private.h"
#include "text-private.h"

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

/* hutch logs: what is read goes out at once, in pieces (nothing grows with the logs),
 * sanitised unless raw. */
typedef struct {
  GOutputStream *out;
  gboolean raw;
  HutchTextStream text;
  GString *buf;
  gboolean write_failed; /* the error is ours (out), not the source's */
} LogsOutput;

#define LOGS_CHUNK (64 * 1024)

static gboolean logs_write_out(LogsOutput *o, const char *data, gsize len, GError **error) {
  if (g_output_stream_write_all(o->out, data, len, NULL, NULL, error))
    return TRUE;
  o->write_failed = TRUE;
  g_prefix_error(error, "writing the logs: ");
  return FALSE;
}

static gboolean logs_write(const char *data, gsize len, gpointer user_data, GError **error) {
  LogsOutput *o = user_data;
  if (o->raw)
    return logs_write_out(o, data, len, error);
  g_string_truncate(o->buf, 0);
  hutch_text_stream_feed(&o->text, data, len, o->buf);
  return logs_write_out(o, o->buf->str, o->buf->len, error);
}

/* The end of one source: a UTF-8 sequence it left incomplete is not completed by the next. */
static gboolean logs_end_source(LogsOutput *o, GError **error) {
  if (o->raw)
    return TRUE;
  g_string_truncate(o->buf, 0);
  hutch_text_stream_finish(&o->text, o->buf);
  return logs_write_out(o, o->buf->str, o->buf->len, error);
}

/* hutch's own lines between the sources; what they quote (an error) is sanitised always. */
static gboolean logs_note(LogsOutput *o, const char *header, const char *detail, GError **error) {
  g_autofree char *clean = hutch_text_sanitize(detail, -1, HUTCH_TEXT_LINE);
  g_autofree char *text = g_strdup_printf("==> %s <==\n%s%s", header, clean, *clean ? "\n" : "");
  return logs_write_out(o, text, strlen(text), error);
}

static gboolean logs_console(LogsOutput *o, const char *path, GError **error) {
  g_autofree char *header = g_strdup_printf("console (%s)", path);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return logs_note(o, header, "(no console output yet)", error);
  if (!logs_note(o, header, "", error)) {
    close(fd);
    return FALSE;
  }
  g_autofree char *buf = g_malloc(LOGS_CHUNK);
  gboolean ok = TRUE;
  for (;;) {
    ssize_t n = read(fd, buf, LOGS_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "reading %s: %s", path,
                  g_strerror(saved));
      ok = FALSE;
      break;
    }
    if (n == 0 || !(ok = logs_write(buf, (gsize)n, o, error)))
      break;
  }
  close(fd);
  return ok && logs_end_source(o, error);
}

/* cloud-init's output and each provisioning step's log; the guest prints the headers. */
static const char guest_logs_command[] =
    "for f in /var/log/cloud-init-output.log /var/log/hutch/steps/*.log;"
    " do [ -r \"$f\" ] || sudo -n test -r \"$f\" || continue;"
    " echo \"==> $f <==\"; sudo -n cat \"$f\" 2>/dev/null || cat \"$f\"; done";

gboolean hutch_logs(HutchContext *ctx, const char *name, int out_fd, gboolean raw, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  g_autoptr(GOutputStream) out = g_unix_output_stream_new(out_fd, FALSE);
  g_autoptr(GString) buf = g_string_new(NULL);
  LogsOutput o = {.out = out, .raw = raw, .buf = buf};
  hutch_text_stream_init(&o.text, HUTCH_TEXT_LINES);
  g_autofree char *console_path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CONSOLE, NULL);
  if (!logs_console(&o, console_path, error))
    return FALSE;
  if (!hutch_instance_is_active(instance))
    return TRUE;
  g_autoptr(GError) ssh_error = NULL;
  g_autoptr(HutchSsh) ssh = hutch_instance_connect(ctx, name, &ssh_error);
  if (ssh && hutch_ssh_exec_stream(ssh, guest_logs_command, logs_write, &o, &ssh_error) >= 0)
    return logs_end_source(&o, error);
  if (o.write_failed) {
    g_propagate_error(error, g_steal_pointer(&ssh_error));
    return FALSE;
  }
  /* the guest's logs are a bonus: a guest that cannot be reached still has its console */
  if (!logs_end_source(&o, error))
    return FALSE;
  g_autofree char *why = g_strdup_printf("(unavailable: %s)", ssh_error->message);
  return logs_note(&o, "guest logs", why, error);
}
