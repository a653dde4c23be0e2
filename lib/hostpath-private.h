/* hostpath-private.h: the one path walker. Every host-side step of a copy (hutch cp) is made
 * relative to a directory file descriptor, one name at a time, and no symbolic link is
 * followed unless root owns it.
 *
 * Why: a guest writes into its shares on the host as the host user (or a subordinate id),
 * and it can plant a link there at any moment ("share/x -> ~/.ssh", "file ->
 * ~/.ssh/id_ed25519") or rename directories while hutch copies. A link root owns was made by
 * the system (/home -> var/home), never through a share: virtiofsd maps guest ids to the host
 * user or its subordinate ids (when hutch itself runs as root, no link is trusted: see
 * hutch_hostpath_link_is_trusted). */
#pragma once

#include <sys/stat.h>

#include "hutch.h"
#include "util-private.h" /* HutchFd */

/* The most symbolic links one walk follows (Linux's own limit). */
#define HUTCH_HOSTPATH_MAX_LINKS 40

/* TRUE when the len bytes at name are one plain directory entry name: not empty, not "." or
 * "..", no '/' and no NUL. Every name a guest hands us (an SFTP directory entry, the last
 * component of a REALPATH answer) passes this before it names anything on the host. */
gboolean hutch_hostpath_name_is_safe(const char *name, gsize len);

/* The len bytes at name for a message that may reach a terminal: printable ASCII is kept,
 * every other byte (and the backslash) becomes \xHH; at most 64 bytes are shown. */
char *hutch_hostpath_name_display(const char *name, gsize len);

/* Whether a walk by a process with effective uid euid follows a symbolic link whose lstat is
 * st: only when root owns it, and never when we are root ourselves: hutch run as root runs
 * virtiofsd without a user namespace, so guest root's files in a share are host root's. */
gboolean hutch_hostpath_link_is_trusted(const struct stat *st, uid_t euid);

/* The one refusal of a link that is not trusted: "refusing to VERB the symbolic link SHOWN
 * (WHY): name the real path", VERB being "follow" or "write through". */
void hutch_hostpath_refuse_link(GError **error, const char *verb, const char *shown, uid_t euid);

/* Opens a path the user named: relative ones from the working directory, absolute ones from
 * "/", one component at a time (".." as typed is the physical parent). A component that is
 * a symbolic link is followed only when hutch_hostpath_link_is_trusted (its target resolved
 * the same way, at most HUTCH_HOSTPATH_MAX_LINKS links); any other link is refused. A trailing
 * '/' requires a directory. flags: O_PATH (anything), O_PATH | O_DIRECTORY, or O_RDONLY with
 * optional O_DIRECTORY / O_NONBLOCK, which opens only directories and regular files (a FIFO
 * never blocks the open); O_NOFOLLOW and O_CLOEXEC are always added. A missing path is
 * HUTCH_ERROR_NOT_FOUND, a special file opened for reading HUTCH_ERROR_USAGE; errors name
 * the path. Returns the descriptor, or -1 with error set. */
int hutch_hostpath_open(const char *path, int flags, GError **error);
/* The same walk as if hutch ran with effective uid euid: for tests, which run as root and as
 * an ordinary user. */
int hutch_hostpath_open_as(const char *path, int flags, uid_t euid, GError **error);

/* Opens the directory holding path's last component (as hutch_hostpath_open with
 * O_PATH | O_DIRECTORY) and returns that component in ret_name: "a/b" -> "a", "b";
 * "b" -> ".", "b"; "/" -> "/", "."; "a/.." -> "a", "..". Trailing slashes are dropped (the
 * caller checks what the name is). */
int hutch_hostpath_open_parent(const char *path, char **ret_name, GError **error);

/* One name below a directory descriptor, never through a symbolic link (name: a single
 * component, see hutch_hostpath_name_is_safe; shown: its path, for messages only). A link
 * where a directory or file was expected is "refusing to ... through the symbolic link
 * SHOWN". Each returns a descriptor (O_CLOEXEC), or -1 with error set. */

/* An existing directory, O_RDONLY (for fdopendir and fchmod). expected (may be NULL): what
 * an fstatat(AT_SYMLINK_NOFOLLOW) said before; another file now (same device and inode
 * required) is "SHOWN changed while hutch was copying it". */
int hutch_hostpath_open_child_dir(int dirfd, const char *name, const struct stat *expected,
                                  const char *shown, GError **error);
/* A directory made with mode if missing (an existing directory is used as it is), then
 * opened O_RDONLY; something else there is an error. ret_created (may be NULL): whether this
 * call made it, so that callers change the mode of what they made only. */
int hutch_hostpath_make_child_dir(int dirfd, const char *name, mode_t mode, gboolean *ret_created,
                                  const char *shown, GError **error);
/* An existing regular file for reading (expected: as for open_child_dir); anything else
 * fails at once. */
int hutch_hostpath_open_child_file(int dirfd, const char *name, const struct stat *expected,
                                   const char *shown, GError **error);

/* ---- A file written whole or not at all ------------------------------------------------ */

/* A regular file name below a directory descriptor, written under a temporary name in the
 * same directory and renamed over name only once it is complete. An existing file at name is
 * replaced, never written into: its inode may be shared with files outside the destination (a
 * hard link from a cache, as uv and pnpm make them, into the tree being copied into), and a
 * copy that fails or is cancelled halfway must leave it as it was.
 *
 *   g_auto(HutchHostpathNewFile) file = HUTCH_HOSTPATH_NEW_FILE_INIT;
 *   if (!hutch_hostpath_new_file_begin(dirfd, name, shown, &file, error)) ...
 *   write to file.fd, fchmod(file.fd, mode) ...
 *   if (!hutch_hostpath_new_file_commit(&file, shown, error)) ...
 *
 * Leaving the scope without a commit (or calling _abort) removes the temporary file. */
typedef struct {
  int fd;     /* the temporary file, open for writing (0600 until the caller's fchmod) */
  int dirfd;  /* the directory (a duplicate this struct owns) */
  char *name; /* the final name */
  char *temp; /* the temporary name, ".NAME.hutch-XXXXXX"; NULL once renamed or removed */
} HutchHostpathNewFile;
#define HUTCH_HOSTPATH_NEW_FILE_INIT                                                               \
  { .fd = -1, .dirfd = -1 }

/* Checks name (see hutch_hostpath_name_is_safe) and what is there now, without following a
 * link: nothing or a regular file is fine; a symbolic link (even root's) is "refusing to
 * write through the symbolic link SHOWN"; a directory, FIFO, socket or device is "SHOWN: not a
 * regular file". Then creates the temporary file (O_EXCL, never through a link, 0600) and
 * fills *ret_file (which must be HUTCH_HOSTPATH_NEW_FILE_INIT). FALSE with error set and
 * *ret_file untouched on failure. */
gboolean hutch_hostpath_new_file_begin(int dirfd, const char *name, const char *shown,
                                       HutchHostpathNewFile *ret_file, GError **error);
/* Closes the file (a write error the kernel kept for close is an error) and renames it over
 * its name: a symbolic link or file put there meanwhile is replaced, not written through; a
 * directory there fails. On failure the temporary file is removed. Either way file is
 * cleared (_abort is then a no-op). */
gboolean hutch_hostpath_new_file_commit(HutchHostpathNewFile *file, const char *shown,
                                        GError **error);
/* Closes and removes the temporary file, if any, and clears file; the name is untouched.
 * For a cleared or committed file, does nothing. errno is kept. */
void hutch_hostpath_new_file_abort(HutchHostpathNewFile *file);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(HutchHostpathNewFile, hutch_hostpath_new_file_abort)
