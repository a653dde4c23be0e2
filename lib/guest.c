/* guest.c: reaching into a running instance: shell, cp, ssh-config, logs. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixoutputstream.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "guest-private.h"
#include "instance-private.h"
#include "supervisor-private.h"
#include "text-private.h"

int hutch_shell(HutchContext *ctx, const char *name, const char *workdir, char **argv,
                GError **error) {
  if (!hutch_name_is_valid(name, error))
    return -1;
  /* the supervisors serve the session daemon's VMs: a URI hutch refuses is refused here too,
   * not served by the session VM of the same name */
  if (!hutch_context_check_uri(ctx, error))
    return -1;
  g_autofree char *command = hutch_shell_command(argv, workdir);
  gboolean pty = hutch_shell_wants_pty(!argv || !argv[0]);
  /* Through the VM's supervisor when one answers: a channel on its session, no new
   * connection. Anything wrong before the command runs means connecting directly. (The
   * front, cmd/front.c, does the same before it executes the full CLI.) */
  g_autofree char *runtime_dir = hutch_instance_runtime_dir(name);
  gboolean used = FALSE;
  int status = hutch_supervisor_exec(runtime_dir, command, pty, &used, error);
  if (used) {
    if (status < 0)
      g_prefix_error(error, "%s: ", name);
    return status;
  }
  g_autoptr(HutchSsh) ssh = hutch_instance_connect(ctx, name, error);
  if (!ssh)
    return -1;
  /* the next command finds one */
  hutch_supervisor_spawn(ctx, name, runtime_dir);
  status = hutch_ssh_exec_interactive(ssh, command, pty, error);
  if (status < 0)
    g_prefix_error(error, "%s: ", name);
  return status;
}

gboolean hutch_copy_split(const char *spec, char **ret_name, char **ret_path) {
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

gboolean hutch_copy_sides(const char *src, const char *dst, char **ret_name, char **ret_path,
                          gboolean *ret_from_vm, GError **error) {
  g_autofree char *src_name = NULL, *src_path = NULL, *dst_name = NULL, *dst_path = NULL;
  gboolean from_vm = hutch_copy_split(src, &src_name, &src_path);
  gboolean to_vm = hutch_copy_split(dst, &dst_name, &dst_path);
  if (from_vm == to_vm) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "exactly one of '%s' and '%s' must be NAME:PATH", src, dst);
    return FALSE;
  }
  *ret_name = g_steal_pointer((from_vm ? &src_name : &dst_name));
  *ret_path = g_steal_pointer((from_vm ? &src_path : &dst_path));
  *ret_from_vm = from_vm;
  return TRUE;
}

gboolean hutch_copy(HutchContext *ctx, const char *src, const char *dst, gboolean recursive,
                    GError **error) {
  g_autofree char *name = NULL, *vm_path = NULL;
  gboolean src_remote = FALSE;
  if (!hutch_copy_sides(src, dst, &name, &vm_path, &src_remote, error))
    return FALSE;
  /* the supervisors serve the session daemon's VMs (as in hutch_shell) */
  if (!hutch_context_check_uri(ctx, error))
    return FALSE;
  /* Through the VM's supervisor when one takes it: its copy session is already connected.
   * Anything wrong before the copy begins means copying directly. */
  g_autofree char *runtime_dir = hutch_instance_runtime_dir(name);
  gboolean used = FALSE;
  gboolean ok = hutch_supervisor_copy(runtime_dir, !src_remote, src_remote ? dst : src, vm_path,
                                      recursive, &used, error);
  if (used)
    return ok;
  g_autoptr(HutchSsh) ssh = hutch_instance_connect(ctx, name, error);
  if (!ssh)
    return FALSE;
  /* the next copy or command finds one */
  hutch_supervisor_spawn(ctx, name, runtime_dir);
  if (src_remote)
    return hutch_ssh_download(ssh, vm_path, dst, recursive, error);
  return hutch_ssh_upload(ssh, src, vm_path, recursive, error);
}

/* The Host block of a running instance; rewrites its known_hosts for the current port. */
static char *host_block(HutchInstance *instance, GError **error) {
  const char *name = instance->name;
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

static gboolean has_port(HutchInstance *instance) {
  return hutch_instance_is_active(instance) && instance->meta->ssh_port != 0;
}

char *hutch_ssh_config(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  if (!has_port(instance)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "'%s' is not running: its SSH port is chosen at start (hutch start %s)", name,
                name);
    return NULL;
  }
  return host_block(instance, error);
}

/* ---- ssh-config --install: every VM for OpenSSH and VS Code Remote-SSH ------------------ */

char *hutch_ssh_config_file(void) {
  g_autofree char *config = hutch_config_dir();
  return g_build_filename(config, "ssh_config", NULL);
}

static char *user_ssh_config(void) {
  return g_build_filename(g_get_home_dir(), ".ssh", "config", NULL);
}

/* What the generated file holds: a Host block for each running VM (with the port of this
 * start), a comment for each stopped one (`hutch start` rewrites the file). */
/* The file serves both daemons, a section each: a refresh rewrites its own daemon's and keeps
 * the other's as it was (VMs of qemu:///system and of the session side by side). */
#define SSH_SECTION "# == VMs of "

static const char *section_uri(HutchContext *ctx) {
  return hutch_context_is_system(ctx) ? "qemu:///system" : "qemu:///session";
}

/* The sections of text but own's, each from its header line to the next header or the end.
 * A file of an older hutch has no headers: its blocks were the session's, kept under that
 * header when another daemon refreshes first. */
char *hutch_ssh_config_other_sections(const char *text, const char *own) {
  if (!text || !*text)
    return g_strdup("");
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  g_autofree char *own_header = g_strconcat(SSH_SECTION, own, NULL);
  GString *out = g_string_new(NULL);
  gboolean headers = strstr(text, SSH_SECTION) != NULL;
  gboolean keep = FALSE;
  if (!headers && strcmp(own, "qemu:///session") != 0) {
    g_string_append(out, SSH_SECTION "qemu:///session\n");
    keep = TRUE;
  }
  for (guint i = 0; lines[i]; i++) {
    if (g_str_has_prefix(lines[i], SSH_SECTION))
      keep = strcmp(lines[i], own_header) != 0;
    /* an older file's two lines of preamble, which every refresh writes anew */
    else if (!headers && i < 2 && lines[i][0] == '#')
      continue;
    if (keep)
      g_string_append_printf(out, "%s\n", lines[i]);
  }
  /* one final newline, however many the file had */
  while (out->len > 0 && out->str[out->len - 1] == '\n')
    g_string_truncate(out, out->len - 1);
  if (out->len > 0)
    g_string_append_c(out, '\n');
  return g_string_free(out, FALSE);
}

static char *all_blocks(HutchContext *ctx, GError **error) {
  g_autoptr(JsonArray) list = hutch_instance_list(ctx, error);
  if (!list)
    return NULL;
  GString *out =
      g_string_new("# Written by hutch (hutch ssh-config --install): rewritten when a VM\n"
                   "# is created, started, stopped or deleted. Edits are lost.\n");
  g_string_append_printf(out, "\n" SSH_SECTION "%s\n", section_uri(ctx));
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *o = json_array_get_object_element(list, i);
    const char *name = json_object_get_string_member(o, "name");
    /* an instance directory without its domain is listed too, but has no block */
    g_autoptr(GError) local = NULL;
    g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, &local);
    if (!instance)
      continue;
    if (!has_port(instance)) {
      g_string_append_printf(out, "\n# %s: stopped (hutch start %s adds it)\n", name, name);
      continue;
    }
    g_autofree char *block = host_block(instance, &local);
    if (!block) {
      g_autofree char *why = hutch_text_sanitize(local->message, -1, HUTCH_TEXT_LINE);
      g_string_append_printf(out, "\n# %s: left out: %s\n", name, why);
      continue;
    }
    g_string_append_printf(out, "\n%s", block);
  }
  return g_string_free(out, FALSE);
}

/* The generated file is read, changed and written again: two refreshes at once (one for each
 * daemon, or two verbs on one) take turns, or one would write back a section as it was before
 * the other's change. The lock is its directory's (hutch's own, made here), so that no lock
 * file is left beside it; it goes with the returned descriptor. -1 on an error. */
static int lock_config_dir(const char *path, GError **error) {
  g_autofree char *dir = g_path_get_dirname(path);
  if (!hutch_mkdir(dir, 0700, error))
    return -1;
  g_auto(HutchFd) lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "locking %s: %s", dir,
                g_strerror(errno));
    return -1;
  }
  return g_steal_fd(&lock_fd);
}

/* only_if_installed: a refresh, which writes nothing once the file is gone (an uninstall
 * that took the lock first) */
static gboolean write_all_blocks(HutchContext *ctx, const char *path, gboolean only_if_installed,
                                 GError **error) {
  g_auto(HutchFd) lock_fd = lock_config_dir(path, error);
  if (lock_fd < 0)
    return FALSE;
  if (only_if_installed && !g_file_test(path, G_FILE_TEST_EXISTS))
    return TRUE;
  g_autofree char *own = all_blocks(ctx, error);
  if (!own)
    return FALSE;
  g_autofree char *old = NULL;
  g_file_get_contents(path, &old, NULL, NULL);
  g_autofree char *others = hutch_ssh_config_other_sections(old, section_uri(ctx));
  g_autofree char *text = g_strconcat(own, *others ? "\n" : "", others, NULL);
  return hutch_write_file(path, text, strlen(text), 0600, error);
}

void hutch_ssh_config_refresh(HutchContext *ctx) {
  g_autofree char *path = hutch_ssh_config_file();
  if (!g_file_test(path, G_FILE_TEST_EXISTS))
    return; /* not installed */
  g_autoptr(GError) error = NULL;
  if (!write_all_blocks(ctx, path, TRUE, &error))
    hutch_progress_note(ctx, "updating %s failed (hutch ssh-config --install retries): %s", path,
                        error->message);
}

char *hutch_ssh_include_line(const char *path) {
  /* OpenSSH splits arguments at blanks unless quoted, and has no escape for '"' */
  if (strchr(path, '"') || strchr(path, '\n'))
    return NULL;
  return g_strdup_printf("Include \"%s\"", path);
}

/* Host and Match begin a block: what follows them applies to matching hosts only. */
static gboolean starts_block(const char *line) {
  while (*line == ' ' || *line == '\t')
    line++;
  gsize n = strcspn(line, " \t=");
  return (n == 4 && g_ascii_strncasecmp(line, "Host", 4) == 0) ||
         (n == 5 && g_ascii_strncasecmp(line, "Match", 5) == 0);
}

static gboolean is_line(const char *line, const char *include) {
  g_autofree char *stripped = g_strstrip(g_strdup(line));
  return strcmp(stripped, include) == 0;
}

char *hutch_ssh_config_text_add(const char *text, const char *include) {
  g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);
  /* already where it counts: before any Host or Match line */
  for (guint i = 0; lines[i] && !starts_block(lines[i]); i++)
    if (is_line(lines[i], include))
      return NULL;
  /* OpenSSH takes the first value it reads, so the Include goes first (where it also wins
   * over a `Host *` with ForwardAgent yes); a copy further down goes. */
  GString *out = g_string_new(include);
  g_string_append_c(out, '\n');
  for (guint i = 0; lines[i]; i++) {
    if (!lines[i + 1] && !*lines[i])
      break; /* the text's final newline */
    if (is_line(lines[i], include))
      continue;
    g_string_append_printf(out, "%s\n", lines[i]);
  }
  return g_string_free(out, FALSE);
}

char *hutch_ssh_config_text_remove(const char *text, const char *include) {
  g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);
  GString *out = g_string_new(NULL);
  gboolean found = FALSE;
  for (guint i = 0; lines[i]; i++) {
    if (is_line(lines[i], include)) {
      found = TRUE;
      continue;
    }
    if (!lines[i + 1] && !*lines[i])
      break;
    g_string_append_printf(out, "%s\n", lines[i]);
  }
  if (!found) {
    g_string_free(out, TRUE);
    return NULL;
  }
  return g_string_free(out, FALSE);
}

/* ~/.ssh/config, or the file it links to (a dotfiles checkout): written there, not over the
 * link. */
static char *resolve_user_config(GError **error) {
  g_autofree char *path = user_ssh_config();
  char *real = realpath(path, NULL);
  if (real) {
    char *copy = g_strdup(real);
    free(real);
    return copy;
  }
  if (errno != ENOENT) {
    int saved = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "reading %s: %s", path,
                g_strerror(saved));
    return NULL;
  }
  return g_steal_pointer(&path);
}

gboolean hutch_ssh_config_install(HutchContext *ctx, char **ret_config, gboolean *ret_added,
                                  GError **error) {
  g_autofree char *file = hutch_ssh_config_file();
  g_autofree char *include = hutch_ssh_include_line(file);
  if (!include) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "%s cannot be named in an OpenSSH Include (it has a '\"' or a newline)", file);
    return FALSE;
  }
  if (!write_all_blocks(ctx, file, FALSE, error))
    return FALSE;
  g_autofree char *ssh_dir = g_build_filename(g_get_home_dir(), ".ssh", NULL);
  if (!g_file_test(ssh_dir, G_FILE_TEST_IS_DIR) && !hutch_mkdir(ssh_dir, 0700, error))
    return FALSE;
  g_autofree char *config = resolve_user_config(error);
  if (!config)
    return FALSE;
  g_autofree char *text = NULL;
  g_autoptr(GError) read_error = NULL;
  if (!g_file_get_contents(config, &text, NULL, &read_error) &&
      !g_error_matches(read_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_propagate_error(error, g_steal_pointer(&read_error));
    return FALSE;
  }
  g_autofree char *changed = hutch_ssh_config_text_add(text, include);
  if (changed && !hutch_write_file(config, changed, strlen(changed), 0600, error))
    return FALSE;
  if (ret_config)
    *ret_config = g_steal_pointer(&config);
  if (ret_added)
    *ret_added = changed != NULL;
  return TRUE;
}

gboolean hutch_ssh_config_uninstall(HutchContext *ctx, char **ret_config, gboolean *ret_removed,
                                    GError **error) {
  g_autofree char *file = hutch_ssh_config_file();
  g_autofree char *include = hutch_ssh_include_line(file);
  g_autofree char *config = resolve_user_config(error);
  if (!config)
    return FALSE;
  g_autofree char *text = NULL;
  g_autoptr(GError) read_error = NULL;
  if (!g_file_get_contents(config, &text, NULL, &read_error) &&
      !g_error_matches(read_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_propagate_error(error, g_steal_pointer(&read_error));
    return FALSE;
  }
  g_autofree char *changed = include && text ? hutch_ssh_config_text_remove(text, include) : NULL;
  if (changed && !hutch_write_file(config, changed, strlen(changed), 0600, error))
    return FALSE;
  /* without the file, create, start and delete stop keeping it (under the lock: a refresh
   * under way does not write it again) */
  g_auto(HutchFd) lock_fd = lock_config_dir(file, error);
  if (lock_fd < 0)
    return FALSE;
  if (g_unlink(file) < 0 && errno != ENOENT) {
    int saved = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "removing %s: %s", file,
                g_strerror(saved));
    return FALSE;
  }
  if (ret_config)
    *ret_config = g_steal_pointer(&config);
  if (ret_removed)
    *ret_removed = changed != NULL;
  return TRUE;
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
  gboolean used = FALSE;
  int status = hutch_supervisor_exec_stream(instance->meta->runtime_dir, guest_logs_command,
                                            logs_write, &o, &used, &ssh_error);
  if (used && status >= 0)
    return logs_end_source(&o, error);
  g_autoptr(HutchSsh) ssh =
      used ? NULL : hutch_instance_connect(ctx, name, &ssh_error);
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
