/* system-private.h: what a VM on the local system daemon (qemu:///system) needs that a
 * session VM does not.
 *
 * There QEMU runs as libvirt's own user (libvirt-qemu on Debian), which can reach nothing of
 * the user's: not $XDG_RUNTIME_DIR (0700), nor the instance directory or image cache under
 * a 0700 home. So what QEMU opens lives in the user's directory of that daemon: a `dir`
 * storage pool "hutch-UID" that libvirt makes at /var/lib/libvirt/images/hutch-UID, owned by
 * the user (0711, as libvirt makes it). In it, each directory 0700 with an ACL that lets
 * QEMU's user (and nobody else) pass through to the names it is given:
 *   vms/NAME/   the VM's own disk (a standalone copy of the image: no backing file shared
 *               with other VMs, which libvirt would hand to QEMU's user for good), its
 *               kernel and initrd, and a copy of its seed made again at each start (libvirt
 *               gives a read-only disk to QEMU's user and never back); the instance
 *               directory's disk.qcow2 is a link to the disk
 *   run/NAME/   the VM's runtime directory ($XDG_RUNTIME_DIR/hutch/NAME is a link to it):
 *               the sockets of passt and each virtiofsd, which hutch still starts as the
 *               user, each with an ACL that lets QEMU's user (and nobody else) connect.
 * The ready channel and the console are libvirt's own sockets, read through the API
 * (virDomainOpenChannel, virDomainOpenConsole). */
#pragma once

#include <libvirt/libvirt.h>
#include <sys/types.h>

#include "util-private.h"

#define HUTCH_SYSTEM_POOLS_DIR "/var/lib/libvirt/images"

/* The user's directory on the system daemon at conn (see above): the pool is defined, built
 * and started (and set to autostart) the first time. Fails unless it is a directory of the
 * user's, not writable by others. */
char *hutch_system_dir(virConnectPtr conn, GError **error);

/* system_dir/vms/NAME and system_dir/run/NAME. */
char *hutch_system_vm_dir(const char *system_dir, const char *name);
char *hutch_system_run_dir(const char *system_dir, const char *name);

/* Makes dir (and its parent, below the pool's directory) 0700, with an ACL that lets
 * qemu_uid pass through and nobody else. */
gboolean hutch_system_mkdir(const char *dir, uid_t qemu_uid, GError **error);

/* Makes link (a path of the user's: the instance directory's disk, or the VM's runtime
 * directory) a symbolic link to target; an existing link to target is kept, one to
 * elsewhere replaced, anything else refused. */
gboolean hutch_system_link(const char *target, const char *link, GError **error);

/* The uid QEMU runs as on the system daemon at conn: the DAC base label of the host's
 * capabilities ("+64055:+64055"). */
gboolean hutch_system_qemu_uid(virConnectPtr conn, uid_t *ret_uid, GError **error);

/* Lets uid (QEMU's user) connect to the unix socket at path, and nobody else but its owner:
 * a POSIX ACL (owner rwx, uid rw, group and others nothing). Refused unless path is a
 * socket of the user's (a link planted there is never followed). */
gboolean hutch_system_grant_socket(const char *path, uid_t uid, GError **error);

/* Copies from to to (0600, never readable by others on the way), through a temporary name
 * renamed over what was there, with progress on ctx. */
gboolean hutch_system_copy_file(HutchContext *ctx, const char *from, const char *to,
                                GError **error);

/* Takes back what libvirt handed to QEMU's user for a VM's run and gave back at its end, as
 * the files of vm_dir (the disk, kernel and initrd) came back: mode 0600 and no ACL, so that
 * a mode or ACL an escaped QEMU set while it owned them (one that leaves the user nothing
 * included) does not let the next VM's QEMU (the same user) open them by name. Call it while
 * the VM is stopped: a file that is not the user's is left alone and counted in
 * *ret_not_yours. Returns how many have a name outside vm_dir too (a hard link hutch did not
 * make: made while QEMU owned the file), G_MAXUINT on an error. */
guint hutch_system_reclaim_files(const char *vm_dir, guint *ret_not_yours, GError **error);
