/* context.c: the libvirt connection (opened lazily) and progress reporting. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "context-private.h"

HutchContext *hutch_context_new(const char *uri, GError **error) {
  hutch_init();
  HutchContext *ctx = g_new0(HutchContext, 1);
  if (!uri || !*uri) {
    uri = g_getenv("LIBVIRT_DEFAULT_URI");
    ctx->uri_from_env = uri && *uri;
  }
  ctx->uri = g_strdup(uri && *uri ? uri : "qemu:///session");
  ctx->phase_started = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return ctx;
}

void hutch_context_free(HutchContext *ctx) {
  if (!ctx)
    return;
  if (ctx->conn)
    virConnectClose(ctx->conn);
  g_hash_table_unref(ctx->phase_started);
  g_free(ctx->supervisor_program);
  g_free(ctx->helper_program);
  g_free(ctx->uri);
  g_free(ctx);
}

const char *hutch_context_get_uri(HutchContext *ctx) {
  return ctx->uri;
}

void hutch_context_set_progress(HutchContext *ctx, HutchProgressFunc func,
                                gpointer user_data) {
  ctx->progress = func;
  ctx->progress_data = user_data;
}

void hutch_context_set_helper_program(HutchContext *ctx, const char *program) {
  g_free(ctx->helper_program);
  ctx->helper_program = g_strdup(program);
}

void hutch_context_set_supervisor_program(HutchContext *ctx, const char *program) {
  g_free(ctx->supervisor_program);
  ctx->supervisor_program = g_strdup(program);
}

gboolean hutch_context_uri_is_system(const char *uri) {
  g_autoptr(GUri) parsed = uri ? g_uri_parse(uri, G_URI_FLAGS_NONE, NULL) : NULL;
  if (!parsed)
    return FALSE;
  const char *scheme = g_uri_get_scheme(parsed);
  const char *host = g_uri_get_host(parsed);
  /* the local system daemon, through its default socket: no host, no parameters (socket=
   * and name= would name another daemon or ask it for another URI) */
  return (!host || !*host) && (strcmp(scheme, "qemu") == 0 || strcmp(scheme, "qemu+unix") == 0) &&
         strcmp(g_uri_get_path(parsed), "/system") == 0 && !g_uri_get_query(parsed);
}

gboolean hutch_context_is_system(HutchContext *ctx) {
  return hutch_context_uri_is_system(ctx->uri);
}

gboolean hutch_context_check_not_system(HutchContext *ctx, const char *what, GError **error) {
  if (!hutch_context_is_system(ctx))
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
              "%s on qemu:///system are not built yet: use qemu:///session for them "
              "(docs/architecture.md, \"Other connections\")",
              what);
  return FALSE;
}

gboolean hutch_context_uri_supported(const char *uri, GError **error) {
  g_autoptr(GUri) parsed = g_uri_parse(uri, G_URI_FLAGS_NONE, NULL);
  const char *scheme = parsed ? g_uri_get_scheme(parsed) : ""; /* lower case */
  const char *host = parsed ? g_uri_get_host(parsed) : NULL;
  gboolean local = !host || !*host;
  /* the test driver: in-process, for unit tests and trying things */
  if (local && strcmp(scheme, "test") == 0)
    return TRUE;
  gboolean session = local && (strcmp(scheme, "qemu") == 0 || strcmp(scheme, "qemu+unix") == 0) &&
                     strcmp(g_uri_get_path(parsed), "/session") == 0;
  gboolean other_socket = FALSE;
  if (session && g_uri_get_query(parsed)) {
    /* socket= names the daemon: only the user's own (libvirt drops it before the daemon sees
     * "qemu:///session", which the system daemon would serve as itself); name= overrides the
     * URI the daemon is asked for */
    g_autoptr(GHashTable) params =
        g_uri_parse_params(g_uri_get_query(parsed), -1, "&", G_URI_PARAMS_NONE, NULL);
    g_autofree char *own = g_strconcat(g_get_user_runtime_dir(), "/libvirt/", NULL);
    const char *socket = params ? g_hash_table_lookup(params, "socket") : NULL;
    other_socket = !params || g_hash_table_contains(params, "name") ||
                   (socket && (!g_str_has_prefix(socket, own) || strstr(socket, "/..")));
  }
  if (session && !other_socket)
    return TRUE;
  if (hutch_context_uri_is_system(uri))
    return TRUE;
  const char *why =
      !local ? "hutch keeps a VM's disks, seed and helpers (passt, virtiofsd) on this machine, "
               "where a remote libvirt cannot use them"
      : other_socket ? "hutch runs VMs on your own libvirt session daemon only (its socket is "
                       "in $XDG_RUNTIME_DIR/libvirt)"
      : g_str_has_prefix(scheme, "qemu") && strcmp(g_uri_get_path(parsed), "/system") == 0
          ? "hutch takes the system daemon through its own socket only (qemu:///system)"
          : "hutch runs VMs on your libvirt session daemon or the local system daemon only";
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
              "%s is not supported: %s; use -c qemu:///session or -c qemu:///system "
              "(docs/architecture.md, \"Other "
              "connections\")",
              uri, why);
  return FALSE;
}

gboolean hutch_context_start_allowed(const char *uri, uid_t euid, GError **error) {
  g_autoptr(GUri) parsed = g_uri_parse(uri, G_URI_FLAGS_NONE, NULL);
  /* the test driver in this process, exactly as hutch_context_uri_supported takes it */
  if (euid != 0 || (parsed && strcmp(g_uri_get_scheme(parsed), "test") == 0 &&
                    hutch_context_uri_supported(uri, NULL)))
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
              "refusing to run VMs as root: QEMU would run as root, and each share's "
              "virtiofsd without a user namespace, so guest root would own the shared files as "
              "host root (device nodes, files of any owner); run hutch as your own user");
  return FALSE;
}

gboolean hutch_context_check_may_run_vms(HutchContext *ctx, GError **error) {
  return hutch_context_start_allowed(ctx->uri, geteuid(), error);
}

gboolean hutch_context_check_uri(HutchContext *ctx, GError **error) {
  if (hutch_context_uri_supported(ctx->uri, error))
    return TRUE;
  if (ctx->uri_from_env)
    g_prefix_error(error, "$LIBVIRT_DEFAULT_URI: ");
  return FALSE;
}

virConnectPtr hutch_context_connect(HutchContext *ctx, GError **error) {
  if (ctx->conn)
    return ctx->conn;
  if (!hutch_context_check_uri(ctx, error))
    return NULL;
  ctx->conn = virConnectOpen(ctx->uri);
  if (!ctx->conn) {
    hutch_set_libvirt_error(error, "connecting to %s", ctx->uri);
    return NULL;
  }
  return ctx->conn;
}

gboolean hutch_context_adopt_helpers(HutchContext *ctx, GError **error) {
  if (!hutch_context_connect(ctx, error))
    return FALSE;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "PR_SET_CHILD_SUBREAPER: %s",
                g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

static void emit(HutchContext *ctx, HutchProgressKind kind, const char *phase, double fraction,
                 const char *fmt, va_list ap) {
  if (!ctx || !ctx->progress)
    return;
  g_autofree char *detail = fmt ? g_strdup_vprintf(fmt, ap) : NULL;
  double now = hutch_now();
  double elapsed = 0;
  if (phase) {
    if (kind == HUTCH_PROGRESS_BEGIN) {
      double *start = g_new(double, 1);
      *start = now;
      g_hash_table_replace(ctx->phase_started, g_strdup(phase), start);
    } else {
      double *start = g_hash_table_lookup(ctx->phase_started, phase);
      elapsed = start ? now - *start : 0;
    }
  }
  HutchProgress progress = {
      .kind = kind, .phase = phase, .detail = detail, .elapsed_s = elapsed,
      .fraction = fraction,
  };
  ctx->progress(&progress, ctx->progress_data);
}

void hutch_progress_begin(HutchContext *ctx, const char *phase, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(ctx, HUTCH_PROGRESS_BEGIN, phase, -1, fmt, ap);
  va_end(ap);
}

void hutch_progress_update(HutchContext *ctx, const char *phase, double fraction,
                           const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(ctx, HUTCH_PROGRESS_UPDATE, phase, fraction, fmt, ap);
  va_end(ap);
}

void hutch_progress_end(HutchContext *ctx, const char *phase, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(ctx, HUTCH_PROGRESS_END, phase, 1, fmt, ap);
  va_end(ap);
}

void hutch_progress_note(HutchContext *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(ctx, HUTCH_PROGRESS_NOTE, NULL, -1, fmt, ap);
  va_end(ap);
}
