/* image-private.h: the image cache (build, pull, inspect) and instance overlays. */
#pragma once

#include <json-glib/json-glib.h>

#include "context-private.h"
#include "profile-private.h"

/* A base image ready to back an instance's overlay. */
typedef struct {
  char *key;    /* cache key (directory name under $XDG_CACHE_HOME/hutch/images), or NULL
                 * for an image: { file: } that is used in place */
  char *disk;   /* absolute path of the base disk */
  char *format; /* "qcow2" or "raw" */
  char *kernel; /* direct kernel boot: kernel, initrd and command line, else NULL */
  char *initrd;
  char *cmdline;
} HutchImage;

void hutch_image_free(HutchImage *image);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchImage, hutch_image_free)

/* The image a profile names, built or downloaded into the cache first when it is not there
 * (with progress on ctx), inspected before it is returned. An image: url: that cannot be
 * downloaded at all (hutch_image_curl_unreachable, for the checksums or the file) and has no
 * cached copy is replaced by its fallback: build:, with a progress note saying why; a file
 * that arrives and is wrong (digest, header, no checksum for it) is an error all the same. */
HutchImage *hutch_image_resolve(HutchContext *ctx, const HutchProfile *profile, GError **error);

/* Refuses anything but raw or a qcow2 without backing file or external data file. Returns
 * the format ("qcow2" / "raw") in ret_format. */
gboolean hutch_image_inspect(const char *path, char **ret_format, GError **error);

/* Creates overlay (qcow2, backing file image->disk with its format recorded) of size bytes
 * (never smaller than the base's virtual size). */
/* A standalone qcow2 copy of image's disk at out (no backing file), of size bytes or the
 * image's size if larger; 0600 from the start, removed on failure. */
gboolean hutch_image_create_copy(const HutchImage *image, const char *out, guint64 size,
                                 GError **error);
gboolean hutch_image_create_overlay(const HutchImage *image, const char *overlay, guint64 size,
                                    GError **error);
/* The virtual size of an instance's overlay (what the guest sees as its disk). */
/* A copy of the overlay source (of image) at overlay: an overlay of the same image holding
 * what source changed, without source's snapshots. For clones. */
gboolean hutch_image_copy_overlay(const HutchImage *image, const char *source, const char *overlay,
                                  GError **error);
gboolean hutch_image_overlay_size(const char *overlay, guint64 *ret_size, GError **error);
/* Grows overlay (qcow2) to size bytes with qemu-img resize; the same size does nothing, a
 * smaller one is HUTCH_ERROR_USAGE (a disk only grows: shrinking would cut the guest's file
 * system). */
gboolean hutch_image_grow_overlay(const char *overlay, guint64 size, GError **error);

/* A standalone qcow2 copy of overlay at out: its backing chain read into it. For templates. */
gboolean hutch_image_flatten(const char *overlay, const char *out, GError **error);

/* Templates are cache entries too: images/template-NAME (template.c), with an image.json of
 * kind "template" whose disk, kernel, initrd and cmdline are read like a built image's. */
#define HUTCH_TEMPLATE_KEY_PREFIX "template-"

/* A work directory images/.tmp-XXXXXX, locked by its creator for as long as it works in it,
 * so that the next build can tell an abandoned one from a busy one; committed by renaming it
 * to images/KEY (an entry made by another process meanwhile wins). */
typedef struct {
  char *path;
  int lock_fd;
} HutchImageWork;
gboolean hutch_image_work_create(HutchImageWork *work, GError **error);
void hutch_image_work_discard(HutchImageWork *work);
gboolean hutch_image_work_commit(HutchImageWork *work, const char *key, GError **error);
char *hutch_image_cache_dir(void);
gboolean hutch_image_is_cached(const char *key);
JsonObject *hutch_image_read_json(const char *key, GError **error);
gboolean hutch_image_write_json(const char *dir, JsonObject *obj, GError **error);
char *hutch_image_now(void);

/* An instance refers to the image with cache key K when the file "image-key" in its
 * directory ($XDG_DATA_HOME/hutch/instances/NAME/image-key) holds K. */
#define HUTCH_INSTANCE_IMAGE_KEY_FILE "image-key"

/* Cache keys: "build-" + 16 hex digits of SHA-256 over the canonical build spec (suite,
 * mirror, sorted package list including the minimum set, recipe version); "url-" + 16 hex
 * digits of SHA-256 over the digest ("sha256:HEX"). */
char *hutch_image_build_key(const HutchImageSpec *spec);
char *hutch_image_url_key(const char *digest, GError **error);

/* The digest ("sha256:HEX" / "sha512:HEX") for file name in a SHA256SUMS-style text (GNU or
 * BSD lines), and the same after fetching checksums_url and looking up url's basename. */
char *hutch_image_find_checksum(const char *sums, const char *name, GError **error);
char *hutch_image_fetch_digest(const char *url, const char *checksums_url, GError **error);

/* TRUE when a libcurl result (a CURLcode) means the file could not be downloaded from here:
 * name resolution, connection, TLS, an HTTP error status, a transfer cut short. FALSE for
 * CURLE_OK and for failures on hutch's side (writing the file, memory). */
gboolean hutch_image_curl_unreachable(int code);

/* The first Debian archive URI (http(s)://.../debian) in apt_dir's sources.list and
 * sources.list.d/ (one-line and deb822 files), or NULL. */
char *hutch_image_host_mirror(const char *apt_dir);
