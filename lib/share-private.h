/* share-private.h: host directories shared into the guest.
 *
 * hutch runs virtiofsd itself rather than through libvirt: libvirt 9.0 refuses virtiofs in
 * session mode and refuses <readonly/> on virtiofs, but accepts <source socket='S'/> for a
 * virtiofsd started by someone else. Every share is virtiofs. A read-only share is enforced
 * on the host: by `--readonly` in the Rust virtiofsd, by a read-only bind mount in virtiofsd's
 * own mount namespace for the C one; the guest's own `ro` mount option is never relied on (the
 * guest user has sudo).
 *
 * Ownership, as an unprivileged host user: virtiofsd runs as root of a user namespace whose
 * uid `guest_uid` (and gid `guest_gid`) is the host user and whose other ids 0..65535 are the
 * user's subordinate ids (/etc/subuid, /etc/subgid, mapped with newuidmap/newgidmap). So the
 * files the guest user creates belong to the host user, and the guest's root (and every other
 * guest id) can only be a subordinate id on the host, never the user. virtiofsd gets its
 * listening socket from hutch (`--fd`), so the socket belongs to the host user (QEMU can
 * connect) and the C virtiofsd needs no lock directory under /run.
 * As root, virtiofsd runs directly and guest ids are host ids. */
#pragma once

#include "domain-private.h"
#include "profile-private.h"
#include "seed-private.h"

typedef enum {
  HUTCH_VIRTIOFSD_C,    /* QEMU's C virtiofsd (Debian 12): -o source=, no read-only mode */
  HUTCH_VIRTIOFSD_RUST, /* the Rust virtiofsd: --shared-dir, --readonly (best effort) */
  HUTCH_VIRTIOFSD_N
} HutchVirtiofsdKind;

typedef struct {
  char *path; /* absolute path of the binary */
  HutchVirtiofsdKind kind;
  gboolean has_readonly; /* `--readonly` is in its --help */
} HutchVirtiofsd;

/* Tells the two virtiofsd apart by their --help text. Pure. */
void hutch_virtiofsd_parse_help(const char *help, HutchVirtiofsdKind *ret_kind,
                                gboolean *ret_has_readonly);
/* Finds virtiofsd: $HUTCH_VIRTIOFSD, else /usr/libexec/virtiofsd, /usr/lib/qemu/virtiofsd,
 * and runs its --help. HUTCH_ERROR_HELPER when none is found. */
HutchVirtiofsd *hutch_virtiofsd_find(GError **error);
void hutch_virtiofsd_free(HutchVirtiofsd *virtiofsd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchVirtiofsd, hutch_virtiofsd_free)

/* File names inside the instance's runtime directory; %u is the share's index. */
#define HUTCH_VIRTIOFS_SOCKET "virtiofs-%u.sock"
#define HUTCH_VIRTIOFS_PID "virtiofs-%u.pid"
#define HUTCH_VIRTIOFS_LOG "virtiofs-%u.log"
/* An empty directory (0700) on which virtiofsd's own mount namespace has the share's host
 * directory bind-mounted: virtiofsd is given this path, never the host path (see
 * hutch_share_start). */
#define HUTCH_VIRTIOFS_ROOT "virtiofs-%u.root"

typedef struct {
  guint index;      /* position in profile->shares */
  char *host_dir;   /* absolute, "~" expanded, symlinks resolved */
  char *guest_path; /* absolute, "~" expanded to the guest user's home */
  char *tag;        /* "hutchfs<index>" */
  gboolean readonly; /* the guest cannot write (enforced on the host, see above) */
  gboolean create;   /* host_dir may be missing: hutch_share_start creates it 0700 */
  HutchShareCache cache; /* virtiofsd's cache policy */
  char *socket;    /* runtime_dir/virtiofs-N.sock */
  char *pidfile;   /* runtime_dir/virtiofs-N.pid */
  char *logfile;   /* runtime_dir/virtiofs-N.log: virtiofsd's stderr */
  char *root;      /* runtime_dir/virtiofs-N.root: virtiofsd's shared directory */
  char *virtiofsd; /* the binary */
  HutchVirtiofsdKind virtiofsd_kind;
  /* host_dir itself (O_PATH | O_DIRECTORY), opened without following any link that is not
   * root's and checked against the record by hutch_share_check_record (or opened by
   * hutch_share_start); -1 until then. Closed with the entry. */
  int dir_fd;
} HutchSharePlanEntry;

void hutch_share_plan_entry_free(HutchSharePlanEntry *entry);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSharePlanEntry, hutch_share_plan_entry_free)

/* The shares of a profile, in its order, as entries (the array frees them). Deterministic:
 * the same profile, directories and virtiofsd give the same tags and paths, so it can be
 * recomputed at every start from the frozen profile. virtiofsd NULL: found with
 * hutch_virtiofsd_find() if any share needs it. Errors (HUTCH_ERROR_PROFILE, naming the
 * share): a host path that is not absolute after "~", "/", the home directory or one of its
 * parents, a missing host directory without `create: true`, a host path that is not a
 * directory, a guest path that is not absolute, "/" or the guest user's home or one of its
 * parents, two shares on one guest path, a socket path too long for a unix socket. */
GPtrArray *hutch_share_plan(const HutchProfile *profile, const HutchVirtiofsd *virtiofsd,
                            const char *runtime_dir, const char *host_home, const char *guest_home,
                            GError **error);

/* A share's host path is resolved ("~", symlinks) at every start, but where it leads must not
 * change after create: a guest can replace a part of it with a symlink through another
 * writable share (share ~/VM-Shared writable and ~/VM-Shared/sub; the guest makes sub a
 * symlink to ~/.ssh) or through another VM's share, to have the next start share a directory
 * the user never named; or it can put another directory in its place (rmdir and mkdir, or
 * rename). So each share's resolved host directory and its identity (st_dev, st_ino) are
 * recorded at create in the file `record` (in the instance directory; a GKeyFile, group
 * "shares", keys "N" for the path, "N.device" and "N.inode", N the share's index) and
 * compared at every start.
 *
 * Opens each entry's host directory into entry->dir_fd with hutch_hostpath_open: host_dir is
 * fully resolved, so any link met now that root does not own was planted and is refused. The
 * descriptor is what hutch_share_start hands virtiofsd, so what was checked is what is served
 * whatever happens to the path after. A `create: true` directory that does not exist yet has
 * only its path recorded (hutch_share_prepare checks, makes it, and checks again).
 *
 * Writes what record lacks (everything at create; the identity of an instance created before
 * it was recorded, or of a `create: true` directory made since) and checks the rest. Fails
 * with HUTCH_ERROR_PROFILE naming the share and both directories (or both identities) when
 * one now resolves elsewhere or is another directory, and writes nothing then. profile: the
 * one plan was made from, for the shares' names. */
gboolean hutch_share_check_record(GPtrArray *plan, const HutchProfile *profile, const char *record,
                                  GError **error);

/* Starts the record `to` (which must not exist) with what the record `from` holds of the
 * shares that `from_profile` and `to_profile` both have (the same host and guest paths, as
 * written), under their indexes in to_profile. Checked against it
 * (hutch_share_check_record), those shares are held to where they led when `from` was made,
 * and only shares new to to_profile are recorded as they resolve now: an edit or a clone
 * must not take a share the guest has redirected since for the new truth. A missing `from`
 * carries nothing. */
gboolean hutch_share_record_carry(const char *from, const HutchProfile *from_profile,
                                  const char *to, const HutchProfile *to_profile, GError **error);

/* Creates the missing host directories of `create: true` entries (0700, with their parents),
 * one name at a time below the deepest one that exists, opened by the path walker: a link
 * met on the way that root does not own is refused. HUTCH_ERROR_PROFILE naming the directory
 * when that fails. */
gboolean hutch_share_make_dirs(GPtrArray *plan, GError **error);

/* What a start does before virtiofsd: hutch_share_check_record, then hutch_share_make_dirs,
 * then hutch_share_check_record again to record what was made. Checked first, so that a
 * `create: true` share whose parent the guest replaced with a link (it resolves elsewhere
 * now) is refused before anything is made at the link's target. */
gboolean hutch_share_prepare(GPtrArray *plan, const HutchProfile *profile, const char *record,
                             GError **error);

/* For HutchDomainConfig.filesystems: HutchDomainFs* (owned; the array frees them). */
GPtrArray *hutch_share_plan_domain_fs(GPtrArray *plan);
/* For HutchSeedConfig.mounts: HutchSeedMount* whose strings point into plan (keep the plan
 * alive as long as the array; the array frees the structs). */
GPtrArray *hutch_share_plan_seed_mounts(GPtrArray *plan);

/* virtiofsd's command line for entry, listening on the inherited fd listen_fd, sharing
 * entry->root (where the host directory is mounted for it); unprivileged: it runs as root of
 * a user namespace (chroot sandbox, which works there). Pure. */
GStrv hutch_share_virtiofsd_argv(const HutchSharePlanEntry *entry, int listen_fd,
                                 gboolean unprivileged);

/* One line of a newuidmap/newgidmap mapping. */
typedef struct {
  guint32 inner, outer, count;
} HutchIdRange;

/* The user namespace mapping for virtiofsd: namespace id `guest_id` -> host_id, the other
 * namespace ids 0..65535 -> the subordinate range [sub_start, sub_start + sub_count), as far
 * as it reaches. Returns the number of ranges written to ranges[3]. Pure. */
guint hutch_share_id_map(guint32 guest_id, guint32 host_id, guint32 sub_start, guint32 sub_count,
                         HutchIdRange ranges[3]);

/* Finds user's first range in a /etc/subuid-style text ("NAME:START:COUNT" or
 * "UID:START:COUNT" lines). Pure. */
gboolean hutch_share_parse_subid(const char *text, const char *user, guint32 uid,
                                 guint32 *ret_start, guint32 *ret_count);

/* Creates missing `create: true` host directories (hutch_share_make_dirs), opens the host
 * directories hutch_share_check_record has not opened (entry->dir_fd), then starts one
 * virtiofsd for each virtiofs entry, detached (own session, stdin /dev/null, stderr to its
 * log), its pid in its pidfile, and returns once each is waiting for QEMU. virtiofsd never
 * sees the host path: it runs in a private mount namespace where entry->dir_fd, the very
 * directory that was checked, is bind-mounted (read-only for a read-only share and a
 * virtiofsd without --readonly) on entry->root, and it shares that. Stale virtiofsd of the
 * same entries are stopped first. guest_uid/guest_gid: the guest user's ids (see the mapping
 * above). On failure the ones started are stopped again. Errors: HUTCH_ERROR_HELPER (with
 * the log's tail), HUTCH_ERROR_PROFILE (a host directory is gone, is reached through a link
 * that root does not own, or cannot be created). */
gboolean hutch_share_start(GPtrArray *plan, guint guest_uid, guint guest_gid, GError **error);

/* virtiofsd keeps a descriptor open for every file and directory the guest has looked up, up
 * to its open-file limit (virtiofsd's own and a margin aside). The files and directories
 * below dir_fd (an open directory, links not followed), counted up to cap + 1. */
guint64 hutch_share_count_entries(int dir_fd, guint64 cap);
/* What the start says when entry's host directory holds more than a virtiofsd with the
 * open-file limit nofile can keep open (the guest would meet "Too many open files" partway
 * through a walk of it), else NULL. entry->dir_fd must be open. */
char *hutch_share_crowded(const HutchSharePlanEntry *entry, guint64 nofile);

/* Stops the virtiofsd processes whose pidfiles are in runtime_dir (they exit by themselves
 * when QEMU disconnects) and removes their sockets, pidfiles and (empty) mount points; logs
 * stay. Needs no plan, so
 * it works when the profile's directories have gone. */
void hutch_share_stop(const char *runtime_dir);
