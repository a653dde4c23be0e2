/* util-private.h: helpers shared by libhutch's modules. Not installed. */
#pragma once

#include "client-private.h" /* hutch_runtime_dir */
#include "hutch.h"
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* Sets *error from libvirt's last error (thread-local: call right after the failing call),
 * prefixed with the printf-style context. */
void hutch_set_libvirt_error(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virConnect, virConnectClose)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomainSnapshot, virDomainSnapshotFree)

/* Parses "4GiB", "512MiB", "40G", "1024" (bytes) into bytes. Units: B, KiB/K, MiB/M, GiB/G,
 * TiB/T (all powers of 1024). Returns FALSE on anything else, including overflow and 0. */
gboolean hutch_parse_size(const char *text, guint64 *ret_bytes);
/* The inverse, for display: the largest unit that divides exactly ("4GiB", "1536MiB"). */
char *hutch_format_size(guint64 bytes);

/* Writes data to path atomically (temporary file + rename) with the given mode. */
gboolean hutch_write_file(const char *path, const void *data, gsize len, int mode,
                          GError **error);
/* Reads at most max bytes of path: its first ones, or with from_end its last ones (for files
 * that others write and that may be large: a console log). The text is NUL-terminated;
 * *ret_len gets its length (it may hold NULs). */
char *hutch_read_file_part(const char *path, gsize max, gboolean from_end, gsize *ret_len,
                           GError **error);
/* Makes dir and its parents; dir itself gets mode (0700 for everything hutch owns). */
gboolean hutch_mkdir(const char *dir, int mode, GError **error);
/* rm -rf, refusing "" and "/". Missing is not an error. */
gboolean hutch_rmtree(const char *path, GError **error);

/* Expands a leading "~" or "~/" to home. Returns a new string. */
char *hutch_expand_tilde(const char *path, const char *home);

/* Monotonic seconds. */
double hutch_now(void);

/* Empties the calling thread's signal mask (async-signal-safe: for a child between fork and
 * exec, and for a helper's main). A CLI verb that takes its signals in a thread (cmd/watch.c)
 * blocks them in every thread; what it starts must not inherit that, or a helper would never
 * see SIGHUP or SIGTERM. */
void hutch_unblock_signals(void);

/* A descriptor closed when it goes out of scope (-1: nothing to close; errno is kept), like
 * GLib's g_autofd (2.76, newer than Debian 12's): `g_auto(HutchFd) fd = open(...)`. hutch's
 * one way to tie a descriptor to a scope. */
typedef int HutchFd;
void hutch_fd_close(HutchFd fd);
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(HutchFd, hutch_fd_close, -1)

/* For a child that keeps running without exec (async-signal-safe): moves fds[0..n-1] to
 * descriptors 3, 4, ... (updating fds) and closes every other descriptor above 2, whatever
 * the calling program had open. 0, or -1 with errno. */
int hutch_keep_only_fds(int *fds, unsigned n);

/* The user's hutch directories (XDG base directories with a "hutch" component), newly
 * allocated. runtime: $XDG_RUNTIME_DIR/hutch (GLib falls back to the cache directory when
 * XDG_RUNTIME_DIR is unset). */
char *hutch_data_dir(void);
char *hutch_cache_dir(void);
char *hutch_config_dir(void);
