/* context-private.h: the HutchContext structure. */
#pragma once

#include <sys/types.h>

#include "util-private.h"

struct _HutchContext {
  char *uri;
  gboolean uri_from_env;        /* uri is $LIBVIRT_DEFAULT_URI's */
  virConnectPtr conn;           /* opened lazily by hutch_context_connect() */
  HutchProgressFunc progress;
  gpointer progress_data;
  /* phase name -> start time (double*), so that callers need not keep timers to report
   * elapsed time per phase */
  GHashTable *phase_started;
  /* the program that `hutch supervise NAME` runs as (hutch_supervisor_spawn), or NULL */
  char *supervisor_program;
  /* hutch's own binary, run as the per-VM egress helper (egress-helper.c), or NULL */
  char *helper_program;
};

/* The libvirt connection, opened on first use. Owned by the context. */
/* Whether hutch can run VMs on the libvirt at uri: a local session daemon (qemu:///session,
 * qemu+unix:///session), the local system daemon (qemu:///system, qemu+unix:///system) or
 * the test driver; else a USAGE error that says why. */
gboolean hutch_context_uri_supported(const char *uri, GError **error);
/* Whether uri is the local system daemon (qemu:///system, qemu+unix:///system) as
 * hutch_context_uri_supported takes it: QEMU runs as libvirt's own user there, so what it
 * opens lives in the user's directory of that daemon (system-private.h). */
gboolean hutch_context_uri_is_system(const char *uri);
gboolean hutch_context_is_system(HutchContext *ctx);
/* A USAGE error naming what (plural: "snapshots") when the context is qemu:///system, where
 * it is not built: clones, templates and snapshots work on the session daemon only. */
gboolean hutch_context_check_not_system(HutchContext *ctx, const char *what, GError **error);
/* Whether a process of effective uid euid may make or start a VM (its helpers, its domain) on uri:
 * not root, except on the test driver (which starts nothing). As root, QEMU would run as root
 * and virtiofsd without a user namespace: guest root would own a share's files as host root
 * (the setuid filter holds, but device nodes and chown do not). FAILED error saying so. */
gboolean hutch_context_start_allowed(const char *uri, uid_t euid, GError **error);
/* hutch_context_uri_supported for the context's URI, saying when $LIBVIRT_DEFAULT_URI named
 * it. hutch_context_connect checks it; so does what serves a VM without connecting (shell
 * through the supervisor). */
gboolean hutch_context_check_uri(HutchContext *ctx, GError **error);
virConnectPtr hutch_context_connect(HutchContext *ctx, GError **error);

/* Progress reporting: a phase begins, is updated, ends. Cheap when nobody listens. */
void hutch_progress_begin(HutchContext *ctx, const char *phase, const char *detail_fmt, ...)
    G_GNUC_PRINTF(3, 4);
void hutch_progress_update(HutchContext *ctx, const char *phase, double fraction,
                           const char *detail_fmt, ...) G_GNUC_PRINTF(4, 5);
void hutch_progress_end(HutchContext *ctx, const char *phase, const char *detail_fmt, ...)
    G_GNUC_PRINTF(3, 4);
void hutch_progress_note(HutchContext *ctx, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
