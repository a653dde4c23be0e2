/* system.c: the user's directory on the system daemon (see system-private.h). */
#define _GNU_SOURCE /* O_PATH */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "context-private.h"
#include "system-private.h"

static gboolean set_errno_error(GError **error, int err, const char *what, const char *path) {
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err), "%s %s: %s", what, path,
              g_strerror(err));
  return FALSE;
}

/* ---- the pool ------------------------------------------------------------------------- */

static char *pool_name(void) {
  return g_strdup_printf("hutch-%u", (unsigned)getuid());
}

/* The pool's target path as libvirt has it. */
static char *pool_path(virStoragePoolPtr pool, GError **error) {
  g_autofree char *xml = virStoragePoolGetXMLDesc(pool, 0);
  if (!xml) {
    hutch_set_libvirt_error(error, "reading storage pool %s", virStoragePoolGetName(pool));
    return NULL;
  }
  xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "pool.xml", NULL, XML_PARSE_NONET);
  char *path = NULL;
  for (xmlNodePtr n = doc ? xmlDocGetRootElement(doc)->children : NULL; n && !path; n = n->next) {
    if (n->type != XML_ELEMENT_NODE || !xmlStrEqual(n->name, BAD_CAST "target"))
      continue;
    for (xmlNodePtr t = n->children; t && !path; t = t->next)
      if (t->type == XML_ELEMENT_NODE && xmlStrEqual(t->name, BAD_CAST "path")) {
        xmlChar *text = xmlNodeGetContent(t);
        path = g_strdup((const char *)text);
        xmlFree(text);
      }
  }
  xmlFreeDoc(doc);
  if (!path)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "storage pool %s has no target path",
                virStoragePoolGetName(pool));
  return path;
}

static virStoragePoolPtr define_pool(virConnectPtr conn, const char *name, GError **error) {
  g_autofree char *xml = g_strdup_printf(
      "<pool type='dir'><name>%s</name><target><path>%s/%s</path>"
      "<permissions><mode>0711</mode><owner>%u</owner><group>%u</group></permissions>"
      "</target></pool>",
      name, HUTCH_SYSTEM_POOLS_DIR, name, (unsigned)getuid(), (unsigned)getgid());
  virStoragePoolPtr pool = virStoragePoolDefineXML(conn, xml, 0);
  if (!pool) {
    hutch_set_libvirt_error(error, "defining storage pool %s", name);
    return NULL;
  }
  if (virStoragePoolBuild(pool, 0) < 0) {
    hutch_set_libvirt_error(error, "making storage pool %s's directory", name);
    virStoragePoolUndefine(pool);
    virStoragePoolFree(pool);
    return NULL;
  }
  virStoragePoolSetAutostart(pool, 1);
  return pool;
}

char *hutch_system_dir(virConnectPtr conn, GError **error) {
  g_autofree char *name = pool_name();
  virStoragePoolPtr pool = virStoragePoolLookupByName(conn, name);
  if (!pool) {
    virResetLastError();
    pool = define_pool(conn, name, error);
    if (!pool)
      return NULL;
  }
  char *path = NULL;
  if (virStoragePoolIsActive(pool) != 1 && virStoragePoolCreate(pool, 0) < 0) {
    hutch_set_libvirt_error(error, "starting storage pool %s", name);
    goto out;
  }
  path = pool_path(pool, error);
  if (!path)
    goto out;
  /* a pool of that name made by someone else, or a directory that others could change */
  struct stat st;
  if (lstat(path, &st) < 0) {
    set_errno_error(error, errno, "storage pool directory", path);
    g_clear_pointer(&path, g_free);
  } else if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "storage pool %s's directory %s is not yours alone (a directory of uid %u, "
                "not writable by others, was expected)",
                name, path, (unsigned)getuid());
    g_clear_pointer(&path, g_free);
  }
out:
  virStoragePoolFree(pool);
  return path;
}

char *hutch_system_vm_dir(const char *system_dir, const char *name) {
  return g_build_filename(system_dir, "vms", name, NULL);
}

char *hutch_system_run_dir(const char *system_dir, const char *name) {
  return g_build_filename(system_dir, "run", name, NULL);
}

/* POSIX ACL xattr (linux/posix_acl_xattr.h): a header, then (tag, perm, id) entries */
#define ACL_XATTR_VERSION 2
enum {
  ACL_USER_OBJ = 0x01,
  ACL_USER = 0x02,
  ACL_GROUP_OBJ = 0x04,
  ACL_MASK = 0x10,
  ACL_OTHER = 0x20
};
#define ACL_UNDEFINED_ID UINT32_MAX

static void acl_entry(GByteArray *acl, guint16 tag, guint16 perm, guint32 id) {
  guint8 entry[8];
  entry[0] = tag & 0xff, entry[1] = tag >> 8;
  entry[2] = perm & 0xff, entry[3] = perm >> 8;
  for (int i = 0; i < 4; i++)
    entry[4 + i] = (id >> (8 * i)) & 0xff;
  g_byte_array_append(acl, entry, sizeof(entry));
}

/* path's access ACL: its owner owner_perm, uid uid_perm, its group and others nothing. Not
 * through a link (lsetxattr; the callers check what path is first). */
static gboolean set_acl(const char *path, guint16 owner_perm, uid_t uid, guint16 uid_perm,
                        GError **error) {
  g_autoptr(GByteArray) acl = g_byte_array_new();
  guint8 head[4] = {ACL_XATTR_VERSION, 0, 0, 0};
  g_byte_array_append(acl, head, sizeof(head));
  acl_entry(acl, ACL_USER_OBJ, owner_perm, ACL_UNDEFINED_ID);
  acl_entry(acl, ACL_USER, uid_perm, (guint32)uid);
  acl_entry(acl, ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID);
  acl_entry(acl, ACL_MASK, uid_perm, ACL_UNDEFINED_ID);
  acl_entry(acl, ACL_OTHER, 0, ACL_UNDEFINED_ID);
  if (lsetxattr(path, "system.posix_acl_access", acl->data, acl->len, 0) < 0)
    return set_errno_error(error, errno, "setting an ACL on", path);
  return TRUE;
}

/* dir, a directory of the user's (not a link), 0700 and passable by qemu_uid alone */
static gboolean make_passable(const char *dir, uid_t qemu_uid, GError **error) {
  struct stat st;
  if (lstat(dir, &st) < 0)
    return set_errno_error(error, errno, "creating", dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s is not a directory of yours", dir);
    return FALSE;
  }
  return set_acl(dir, 07, qemu_uid, 01, error);
}

gboolean hutch_system_mkdir(const char *dir, uid_t qemu_uid, GError **error) {
  if (g_mkdir_with_parents(dir, 0700) < 0)
    return set_errno_error(error, errno, "creating", dir);
  g_autofree char *parent = g_path_get_dirname(dir);
  return make_passable(parent, qemu_uid, error) && make_passable(dir, qemu_uid, error);
}

gboolean hutch_system_link(const char *target, const char *link, GError **error) {
  g_autofree char *existing = g_file_read_link(link, NULL);
  if (existing && strcmp(existing, target) == 0)
    return TRUE;
  if (existing)
    g_unlink(link);
  if (symlink(target, link) < 0)
    return set_errno_error(error, errno, "linking", link);
  return TRUE;
}

/* ---- QEMU's user ---------------------------------------------------------------------- */

gboolean hutch_system_qemu_uid(virConnectPtr conn, uid_t *ret_uid, GError **error) {
  g_autofree char *caps = virConnectGetCapabilities(conn);
  if (!caps) {
    hutch_set_libvirt_error(error, "reading the host's capabilities");
    return FALSE;
  }
  /* <secmodel><model>dac</model>...<baselabel type='kvm'>+64055:+64055</baselabel> */
  const char *dac = strstr(caps, "<model>dac</model>");
  const char *label = dac ? strstr(dac, "<baselabel") : NULL;
  const char *value = label ? strchr(label, '>') : NULL;
  char *end = NULL;
  if (value && value[1] == '+') {
    errno = 0;
    unsigned long uid = strtoul(value + 2, &end, 10);
    if (errno == 0 && end && *end == ':' && uid > 0 && uid < UINT32_MAX) {
      *ret_uid = (uid_t)uid;
      return TRUE;
    }
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
              "the system daemon's capabilities name no user for QEMU (no DAC base label)");
  return FALSE;
}

gboolean hutch_system_grant_socket(const char *path, uid_t uid, GError **error) {
  struct stat st;
  if (lstat(path, &st) < 0)
    return set_errno_error(error, errno, "granting QEMU access to", path);
  if (!S_ISSOCK(st.st_mode) || st.st_uid != getuid()) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s is not a socket of yours", path);
    return FALSE;
  }
  return set_acl(path, 07, uid, 06, error);
}

/* ---- files ---------------------------------------------------------------------------- */

guint hutch_system_reclaim_files(const char *vm_dir, guint *ret_not_yours, GError **error) {
  g_autoptr(GDir) dir = g_dir_open(vm_dir, 0, error);
  if (!dir)
    return G_MAXUINT;
  guint linked_elsewhere = 0;
  *ret_not_yours = 0;
  const char *entry;
  while ((entry = g_dir_read_name(dir))) {
    g_autofree char *path = g_build_filename(vm_dir, entry, NULL);
    /* O_PATH: the file is reached whatever its mode and ACL say (QEMU's user may have left
     * the owner nothing); a link is not followed. The directory is the user's, so QEMU's
     * user cannot swap the name meanwhile. */
    g_auto(HutchFd) fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
      continue;
    if (st.st_uid != getuid()) {
      (*ret_not_yours)++;
      continue;
    }
    /* chmod and removexattr through the descriptor's /proc name: an O_PATH descriptor takes
     * neither fchmod nor fremovexattr */
    g_autofree char *by_fd = g_strdup_printf("/proc/self/fd/%d", fd);
    if (removexattr(by_fd, "system.posix_acl_access") < 0 && errno != ENODATA && errno != ENOTSUP) {
      set_errno_error(error, errno, "removing the ACL of", path);
      return G_MAXUINT;
    }
    if ((st.st_mode & 07777) != 0600 && chmod(by_fd, 0600) < 0) {
      set_errno_error(error, errno, "setting the mode of", path);
      return G_MAXUINT;
    }
    if (st.st_nlink > 1)
      linked_elsewhere++;
  }
  return linked_elsewhere;
}

typedef struct {
  HutchContext *ctx;
  const char *what;
} CopyProgress;

static void copy_progress(goffset current, goffset total, gpointer data) {
  CopyProgress *p = data;
  if (total > 0)
    hutch_progress_update(p->ctx, "define", (double)current / (double)total,
                          "%s: %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " MiB", p->what,
                          (gint64)(current >> 20), (gint64)(total >> 20));
}

gboolean hutch_system_copy_file(HutchContext *ctx, const char *from, const char *to,
                                GError **error) {
  g_autofree char *tmp = g_strconcat(to, ".part", NULL);
  g_autofree char *base = g_path_get_basename(to);
  g_autoptr(GFile) src = g_file_new_for_path(from);
  g_autoptr(GFile) dst = g_file_new_for_path(tmp);
  CopyProgress progress = {ctx, base};
  /* a regular file only: a link would be copied as a link, which libvirt would follow when
   * it labels the copy for QEMU */
  struct stat st;
  if (lstat(from, &st) < 0)
    return set_errno_error(error, errno, "copying", from);
  if (!S_ISREG(st.st_mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "copying %s: a regular file was expected",
                from);
    return FALSE;
  }
  g_unlink(tmp);
  mode_t old = umask(077);
  gboolean ok =
      g_file_copy(src, dst, G_FILE_COPY_NOFOLLOW_SYMLINKS | G_FILE_COPY_TARGET_DEFAULT_PERMS, NULL,
                  copy_progress, &progress, error);
  umask(old);
  /* rename over what is there: a copy libvirt gave to QEMU's user and kept it is replaced,
   * not written through */
  if (!ok || g_chmod(tmp, 0600) < 0 || g_rename(tmp, to) < 0) {
    if (ok)
      set_errno_error(error, errno, "copying to", to);
    g_prefix_error(error, "copying %s for qemu:///system: ", from);
    g_unlink(tmp);
    return FALSE;
  }
  return TRUE;
}
