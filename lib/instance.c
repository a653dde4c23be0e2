/* instance.c: the lifecycle of a hutch VM: create, start (with readiness), stop, delete,
 * list, info. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "edit-private.h"
#include "broker-private.h"
#include "egress-helper-private.h"
#include "egress-private.h"
#include "forward-files-private.h"
#include "guest-private.h"
#include "image-private.h"
#include "instance-private.h"
#include "net-private.h"
#include "ready-private.h"
#include "seed-private.h"
#include "share-private.h"
#include "ssh-private.h"
#include "supervisor-private.h"
#include "system-private.h"
#include "template-private.h"
#include "text-private.h"

/* ---- finding instances ---------------------------------------------------------------- */

char *hutch_instance_dir(const char *name) {
  g_autofree char *data = hutch_data_dir();
  return g_build_filename(data, "instances", name, NULL);
}

void hutch_instance_free(HutchInstance *instance) {
  if (!instance)
    return;
  g_free(instance->name);
  if (instance->domain)
    virDomainFree(instance->domain);
  hutch_domain_meta_free(instance->meta);
  g_free(instance);
}

/* An instance directory that no create is working in (or was killed in: create cleans that
 * up). */
static gboolean is_instance_dir(const char *dir) {
  g_autofree char *creating = g_build_filename(dir, HUTCH_INSTANCE_CREATING, NULL);
  return g_file_test(dir, G_FILE_TEST_IS_DIR) && !g_file_test(creating, G_FILE_TEST_EXISTS);
}

gboolean hutch_instance_dir_is_system(const char *dir) {
  g_autofree char *path = g_build_filename(dir, HUTCH_INSTANCE_CONNECTION, NULL);
  g_autofree char *text = NULL;
  return g_file_get_contents(path, &text, NULL, NULL) &&
         hutch_context_uri_is_system(g_strstrip(text));
}

/* Whether conn is the system daemon's. (Any libvirt call resets the thread's last error.) */
static gboolean connection_is_system(virConnectPtr conn) {
  g_autofree char *uri = virConnectGetURI(conn);
  return hutch_context_uri_is_system(uri);
}

static virDomainPtr lookup_domain(virConnectPtr conn, const char *name, GError **error) {
  virDomainPtr domain = virDomainLookupByName(conn, name);
  if (!domain) {
    virErrorPtr last = virGetLastError();
    /* kept: the check of the connection below resets libvirt's last error */
    gboolean no_domain = last && last->code == VIR_ERR_NO_DOMAIN;
    g_autoptr(GError) libvirt_error = NULL;
    if (!no_domain)
      hutch_set_libvirt_error(&libvirt_error, "looking up '%s'", name);
    g_autofree char *dir = hutch_instance_dir(name);
    /* the directory's record of its daemon, read once */
    gboolean dir_is_system = hutch_instance_dir_is_system(dir);
    const char *its_daemon = dir_is_system ? "system" : "session";
    if (no_domain && is_instance_dir(dir) && dir_is_system != connection_is_system(conn))
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                  "'%s' is a VM of qemu:///%s: hutch -c qemu:///%s ...", name, its_daemon,
                  its_daemon);
    else if (no_domain && is_instance_dir(dir))
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                  "no VM named '%s' on this connection, but its files are in %s: %s", name, dir,
                  HUTCH_INSTANCE_MISSING_HINT);
    else if (no_domain)
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "no VM named '%s'", name);
    else
      g_propagate_error(error, g_steal_pointer(&libvirt_error));
  }
  return domain;
}

static HutchDomainMeta *read_meta(virDomainPtr domain, GError **error) {
  g_autofree char *xml =
      virDomainGetMetadata(domain, VIR_DOMAIN_METADATA_ELEMENT, HUTCH_METADATA_NS, 0);
  if (!xml) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH,
                "domain '%s' was not made by hutch (no hutch metadata): hutch leaves it alone",
                virDomainGetName(domain));
    return NULL;
  }
  return hutch_domain_meta_parse(xml, error);
}

static char *system_runtime(virConnectPtr conn, const char *name, char **ret_system_dir,
                            GError **error);

/* qemu:///system: the runtime directory's link leads to a directory (the cheap test that
 * spares a lookup the few calls to the daemon that making the link again takes; start and
 * edit make it again whatever this says) */
static gboolean runtime_link_in_place(const char *link) {
  struct stat st;
  return g_file_test(link, G_FILE_TEST_IS_SYMLINK) && stat(link, &st) == 0 && S_ISDIR(st.st_mode);
}

/* On qemu:///system the domains of every member of group libvirt are side by side: a VM is
 * this user's when its metadata names this user's instance directory. (A session daemon
 * serves one user.) */
static gboolean is_own_instance(HutchContext *ctx, const HutchInstance *instance) {
  if (!hutch_context_is_system(ctx))
    return TRUE;
  g_autofree char *dir = hutch_instance_dir(instance->name);
  return g_strcmp0(instance->meta->instance_dir, dir) == 0;
}

HutchInstance *hutch_instance_lookup(HutchContext *ctx, const char *name, GError **error) {
  if (!hutch_name_is_valid(name, error))
    return NULL;
  virConnectPtr conn = hutch_context_connect(ctx, error);
  if (!conn)
    return NULL;
  g_autoptr(HutchInstance) instance = g_new0(HutchInstance, 1);
  instance->name = g_strdup(name);
  instance->domain = lookup_domain(conn, name, error);
  if (!instance->domain)
    return NULL;
  instance->meta = read_meta(instance->domain, error);
  if (!instance->meta)
    return NULL;
  if (!is_own_instance(ctx, instance)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH,
                "'%s' on %s is not one of your VMs (its files are not in your directory)", name,
                hutch_context_get_uri(ctx));
    return NULL;
  }
  /* qemu:///system: the runtime directory's link, made again when $XDG_RUNTIME_DIR was
   * emptied (the host's reboot, logind at the user's last logout) while the VM's helpers
   * and sockets live on in the pool's run directory */
  if (hutch_context_is_system(ctx) && !runtime_link_in_place(instance->meta->runtime_dir)) {
    /* best effort: a verb that needs it (start, edit) makes it or fails saying why, and
     * stop, info or delete must work without it */
    g_autofree char *run_dir = system_runtime(conn, name, NULL, NULL);
    virResetLastError();
  }
  return g_steal_pointer(&instance);
}

gboolean hutch_instance_exists(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(GError) local = NULL;
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, &local);
  if (instance)
    return TRUE;
  if (g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND))
    return FALSE;
  g_propagate_error(error, g_steal_pointer(&local));
  return FALSE;
}

gboolean hutch_instance_is_active(HutchInstance *instance) {
  return virDomainIsActive(instance->domain) == 1;
}

char *hutch_instance_host_key(HutchInstance *instance, GError **error) {
  /* a clone that has not started yet has its source's key until the first start gives it
   * its own */
  g_autofree char *pending =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CLONE_PENDING, NULL);
  g_autofree char *pinned = g_strdup_printf("%s/%s.pub", instance->meta->instance_dir,
                                            HUTCH_INSTANCE_HOST_KEY);
  const char *path = g_file_test(pending, G_FILE_TEST_EXISTS) ? pending : pinned;
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, error)) {
    g_prefix_error(error, "reading the pinned host key of '%s': ", instance->name);
    return NULL;
  }
  return g_strstrip(text);
}

/* ---- create --------------------------------------------------------------------------- */

void hutch_instance_guest_user(const HutchProfile *profile, char **ret_name, guint *ret_uid,
                               guint *ret_gid) {
  const char *name = profile->user_name ? profile->user_name : g_get_user_name();
  gint64 uid = profile->user_uid >= 0 ? profile->user_uid : (gint64)getuid();
  if (g_strcmp0(name, "root") == 0)
    name = "dev";
  if (uid == 0)
    uid = 1000;
  *ret_name = g_strdup(name);
  *ret_uid = (guint)uid;
  *ret_gid = profile->user_gid >= 0 ? (guint)profile->user_gid : (guint)uid;
}

/* "kvm" when the profile (or HUTCH_ACCEL, which overrides every profile) allows it and the
 * connection can use it, else "qemu" (TCG). */
static const char *choose_domain_type(virConnectPtr conn, const HutchProfile *profile,
                                      GError **error) {
  HutchAccel accel = profile->accel;
  const char *forced = g_getenv("HUTCH_ACCEL");
  if (forced && *forced && !hutch_accel_from_string(forced, &accel)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "HUTCH_ACCEL='%s' is not one of auto, kvm, tcg", forced);
    return NULL;
  }
  if (accel == HUTCH_ACCEL_TCG)
    return "qemu";
  g_autofree char *caps =
      virConnectGetDomainCapabilities(conn, NULL, "x86_64", "q35", "kvm", 0);
  if (caps)
    return "kvm";
  if (accel == HUTCH_ACCEL_KVM) {
    hutch_set_libvirt_error(error, "the profile asks for accel: kvm, but KVM is not usable "
                                   "on this connection (use accel: tcg or auto)");
    return NULL;
  }
  return "qemu";
}

gboolean hutch_instance_is_tcg(HutchInstance *instance) {
  if (instance->meta->accel)
    return strcmp(instance->meta->accel, "tcg") == 0;
  /* instances from before the accel was recorded */
  g_autofree char *xml = virDomainGetXMLDesc(instance->domain, 0);
  return xml && strstr(xml, "<domain type='qemu'") != NULL;
}

gboolean hutch_instance_plan_vcpus(const HutchProfile *profile, gboolean tcg, guint *ret_cpus,
                           char **ret_notice, GError **error) {
  const char *text = g_getenv("HUTCH_TCG_MAX_CPUS");
  guint64 limit = 0;
  if (text && *text && !g_ascii_string_to_unsigned(text, 10, 1, 256, &limit, NULL)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "HUTCH_TCG_MAX_CPUS='%s' is not a number from 1 to 256", text);
    return FALSE;
  }
  *ret_cpus =
      hutch_domain_vcpus(profile->cpus, tcg, g_get_num_processors(), (guint)limit, ret_notice);
  return TRUE;
}

/* HUTCH_TCG_CPU=qemu64: the CPU model TCG guests had before -cpu max, for the boot
 * benchmark's baseline (tests/bench/boot.sh). */
static gboolean tcg_cpu_qemu64(gboolean *ret, GError **error) {
  const char *text = g_getenv("HUTCH_TCG_CPU");
  if (!text || !*text || strcmp(text, "max") == 0) {
    *ret = FALSE;
    return TRUE;
  }
  if (strcmp(text, "qemu64") == 0) {
    *ret = TRUE;
    return TRUE;
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "HUTCH_TCG_CPU='%s' is not max or qemu64",
              text);
  return FALSE;
}

static char *random_mac(void) {
  /* 52:54:00 is QEMU's locally administered prefix. */
  return g_strdup_printf("52:54:00:%02x:%02x:%02x", g_random_int_range(0, 256),
                         g_random_int_range(0, 256), g_random_int_range(0, 256));
}

static gboolean write_text(const char *dir, const char *file, const char *text, int mode,
                           GError **error) {
  g_autofree char *path = g_build_filename(dir, file, NULL);
  return hutch_write_file(path, text, strlen(text), mode, error);
}

GPtrArray *hutch_instance_plan_shares(const HutchProfile *profile, const char *runtime_dir,
                                      const char *guest_user_name, GError **error) {
  g_autofree char *guest_home = g_build_filename("/home", guest_user_name, NULL);
  return hutch_share_plan(profile, NULL, runtime_dir, g_get_home_dir(), guest_home, error);
}

/* ---- host ports ----------------------------------------------------------------------- */

char *hutch_instance_ports_busy_message(const HutchPort *port, guint busy_port, const char *holder,
                                        const char *name, gboolean exists) {
  g_autofree char *host = hutch_port_host_to_string(port);
  gboolean range = port->host_start != port->host_end;
  g_autofree char *who = holder  ? g_strdup_printf("by VM '%s'", holder)
                         : range ? g_strdup_printf("(%u cannot be bound)", busy_port)
                                 : g_strdup("(or cannot be bound)");
  g_autofree char *how =
      exists ? g_strdup_printf("give '%s' other ports with hutch edit %s --no-ports --port "
                               "3000:3000",
                               name, name)
             : g_strdup("give this VM other ports with --no-ports --port 3000:3000");
  g_autofree char *or_else = holder ? g_strdup_printf("stop '%s'", holder) : g_strdup("free it");
  return g_strdup_printf("host port%s %s %s in use %s: %s, or %s", range ? "s" : "", host,
                         range ? "are" : "is", who, how, or_else);
}

static gboolean ip_overlaps(const char *a, const char *b) {
  static const char *const any[] = {"0.0.0.0", "::", NULL};
  return strcmp(a, b) == 0 || g_strv_contains(any, a) || g_strv_contains(any, b);
}

/* The running hutch VM (not `name`) whose frozen profile forwards a host port of `port`, or
 * NULL. Only for an error message: whatever cannot be read is skipped. */
static char *find_port_holder(HutchContext *ctx, const char *name, const HutchPort *port) {
  virConnectPtr conn = hutch_context_connect(ctx, NULL);
  g_autofree char *data = hutch_data_dir();
  g_autofree char *root = g_build_filename(data, "instances", NULL);
  g_autoptr(GDir) dir = conn ? g_dir_open(root, 0, NULL) : NULL;
  const char *other;
  while (dir && (other = g_dir_read_name(dir))) {
    if (strcmp(other, name) == 0 || !hutch_name_is_valid(other, NULL))
      continue;
    g_autofree char *path = g_build_filename(root, other, HUTCH_INSTANCE_PROFILE, NULL);
    g_autoptr(HutchProfile) profile = hutch_profile_load_file(path, NULL);
    gboolean overlaps = FALSE;
    for (guint i = 0; profile && !overlaps && i < profile->ports->len; i++) {
      const HutchPort *theirs = g_ptr_array_index(profile->ports, i);
      overlaps = theirs->proto == port->proto && theirs->host_start <= port->host_end &&
                 port->host_start <= theirs->host_end &&
                 ip_overlaps(theirs->host_ip, port->host_ip);
    }
    if (!overlaps)
      continue;
    g_autoptr(virDomain) domain = virDomainLookupByName(conn, other);
    if (domain && virDomainIsActive(domain) == 1)
      return g_strdup(other);
  }
  return NULL;
}

gboolean hutch_instance_check_ports(HutchContext *ctx, const char *name, GPtrArray *ports,
                                    gboolean exists, GError **error) {
  guint busy_port = 0;
  const HutchPort *busy = hutch_net_find_busy_port(ports, &busy_port);
  if (!busy)
    return TRUE;
  g_autofree char *holder = find_port_holder(ctx, name, busy);
  g_autofree char *message =
      hutch_instance_ports_busy_message(busy, busy_port, holder, name, exists);
  g_set_error_literal(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE, message);
  return FALSE;
}

/* Everything create makes, so that a failure can remove it. */
typedef struct {
  char *instance_dir;
  virDomainPtr domain;
  /* qemu:///system: the VM's directories in the user's directory of the daemon, and the
   * runtime directory's link to its own (system-private.h) */
  char *system_vm_dir;
  char *system_run_dir;
  char *runtime_link;
} CreateUndo;

static void create_undo(CreateUndo *undo) {
  if (undo->domain) {
    virDomainUndefineFlags(undo->domain, VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA);
    virDomainFree(undo->domain);
    undo->domain = NULL;
  }
  if (undo->instance_dir)
    hutch_rmtree(undo->instance_dir, NULL);
  if (undo->runtime_link)
    hutch_rmtree(undo->runtime_link, NULL); /* the link, not what it leads to */
  if (undo->system_vm_dir)
    hutch_rmtree(undo->system_vm_dir, NULL);
  if (undo->system_run_dir)
    hutch_rmtree(undo->system_run_dir, NULL);
}

static void create_undo_clear(CreateUndo *undo) {
  g_free(undo->instance_dir);
  g_free(undo->system_vm_dir);
  g_free(undo->system_run_dir);
  g_free(undo->runtime_link);
}

/* qemu:///system: passt serves the NIC through libvirt's vhost-user interface, the one way
 * libvirt hands QEMU a socket of the user's there (a stream socket would need
 * <qemu:commandline>, which no confinement of QEMU names). */
static gboolean system_needs_vhost_user(GError **error) {
  gboolean vhost_user = FALSE;
  if (!hutch_net_vhost_user(&vhost_user, error))
    return FALSE;
  if (vhost_user)
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
              "VMs on qemu:///system need passt's vhost-user mode (passt 2024-11 and later), "
              "and %s has none%s: use qemu:///session",
              hutch_net_find_passt(),
              g_strcmp0(g_getenv("HUTCH_PASST_VHOST_USER"), "0") == 0
                  ? " in use (HUTCH_PASST_VHOST_USER=0)"
                  : "");
  return FALSE;
}

/* qemu:///system: the VM's runtime directory in the user's directory of the daemon, made,
 * and $XDG_RUNTIME_DIR/hutch/NAME a link to it (made again after the host's reboot emptied
 * $XDG_RUNTIME_DIR). Returns the directory QEMU reaches (*ret_system_dir: the user's
 * directory itself). */
static char *system_runtime(virConnectPtr conn, const char *name, char **ret_system_dir,
                            GError **error) {
  g_autofree char *system_dir = hutch_system_dir(conn, error);
  uid_t qemu_uid = 0;
  if (!system_dir || !hutch_system_qemu_uid(conn, &qemu_uid, error))
    return NULL;
  g_autofree char *run_dir = hutch_system_run_dir(system_dir, name);
  g_autofree char *runtime_root = hutch_runtime_dir();
  g_autofree char *link = hutch_instance_runtime_dir(name);
  if (!hutch_system_mkdir(run_dir, qemu_uid, error) || !hutch_mkdir(runtime_root, 0700, error) ||
      !hutch_system_link(run_dir, link, error))
    return NULL;
  if (ret_system_dir)
    *ret_system_dir = g_steal_pointer(&system_dir);
  return g_steal_pointer(&run_dir);
}

/* The unix sockets QEMU gets in run_dir (passt's, one per share) fit in sun_path: the pool's
 * directory is longer than $XDG_RUNTIME_DIR, so a long name may not. */
static gboolean system_sockets_fit(const char *run_dir, const char *name,
                                   const HutchProfile *profile, GError **error) {
  g_autofree char *last_share = g_strdup_printf(HUTCH_VIRTIOFS_SOCKET, profile->shares->len);
  const char *sockets[] = {HUTCH_PASST_SOCKET, last_share};
  for (guint i = 0; i < G_N_ELEMENTS(sockets); i++) {
    g_autofree char *path = g_build_filename(run_dir, sockets[i], NULL);
    if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "the name '%s' is too long for a VM on qemu:///system: its socket %s would "
                  "pass the 107 bytes of a unix socket's path (%zu); pick a name of at most "
                  "%zu characters",
                  name, path, strlen(path),
                  strlen(name) > strlen(path) - 107 ? strlen(name) - (strlen(path) - 107) : 0);
      return FALSE;
    }
  }
  return TRUE;
}

/* qemu:///system: a fresh copy of the seed where QEMU opens it, returned (libvirt gives a
 * read-only disk to QEMU's user, every VM's, at start and never back: the start removes the
 * copy once QEMU has it open, and the one the user keeps never leaves the instance
 * directory). */
static char *system_refresh_seed(HutchContext *ctx, const char *system_dir,
                                 HutchInstance *instance, GError **error) {
  g_autofree char *seed = g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_SEED, NULL);
  g_autofree char *vm_dir = hutch_system_vm_dir(system_dir, instance->name);
  g_autofree char *copy = g_build_filename(vm_dir, HUTCH_INSTANCE_SEED, NULL);
  if (!hutch_system_copy_file(ctx, seed, copy, error))
    return NULL;
  return g_steal_pointer(&copy);
}

char *hutch_instance_qemu_runtime_dir(HutchContext *ctx, HutchInstance *instance, GError **error) {
  if (!hutch_context_is_system(ctx))
    return g_strdup(instance->meta->runtime_dir);
  return system_runtime(virDomainGetConnect(instance->domain), instance->name, NULL, error);
}

/* hutch_instance_system_reclaim with the user's pool directory at hand (a start has it) */
static gboolean system_reclaim_in(HutchContext *ctx, const char *system_dir, const char *name,
                                  GError **error) {
  g_autofree char *vm_dir = hutch_system_vm_dir(system_dir, name);
  /* the seed's copy of a start killed before it removed it: libvirt's gift to QEMU's user,
   * with the VM's host key (each start makes a fresh one) */
  g_autofree char *seed_copy = g_build_filename(vm_dir, HUTCH_INSTANCE_SEED, NULL);
  if (g_unlink(seed_copy) < 0 && errno != ENOENT) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "removing %s: %s", seed_copy,
                g_strerror(errno));
    return FALSE;
  }
  guint not_yours = 0;
  guint linked = hutch_system_reclaim_files(vm_dir, &not_yours, error);
  if (linked == G_MAXUINT)
    return FALSE;
  if (linked > 0)
    hutch_progress_note(ctx,
                        "%u of %s's files in %s have a name elsewhere too, which hutch did not "
                        "make (while QEMU's user held them): a QEMU may have kept a way to them",
                        linked, name, vm_dir);
  if (not_yours > 0)
    hutch_progress_note(ctx,
                        "%u of %s's files in %s are not yours: libvirt did not give them back "
                        "at the VM's stop",
                        not_yours, name, vm_dir);
  return TRUE;
}

gboolean hutch_instance_system_reclaim(HutchContext *ctx, virDomainPtr domain, const char *name,
                                       GError **error) {
  if (!hutch_context_is_system(ctx))
    return TRUE;
  g_autofree char *system_dir = hutch_system_dir(virDomainGetConnect(domain), error);
  return system_dir && system_reclaim_in(ctx, system_dir, name, error);
}

/* qemu:///system: lets QEMU's user connect to the sockets of passt and each virtiofsd (in
 * the run directory, which it passes through), before the domain starts. */
static gboolean system_grant_sockets(HutchInstance *instance, const HutchProfile *profile,
                                     const char *qemu_runtime, GError **error) {
  uid_t qemu_uid = 0;
  if (!hutch_system_qemu_uid(virDomainGetConnect(instance->domain), &qemu_uid, error))
    return FALSE;
  g_autofree char *passt = g_build_filename(qemu_runtime, HUTCH_PASST_SOCKET, NULL);
  if (!hutch_system_grant_socket(passt, qemu_uid, error))
    return FALSE;
  g_autoptr(GPtrArray) plan =
      hutch_instance_plan_shares(profile, qemu_runtime, instance->meta->guest_user, error);
  if (!plan)
    return FALSE;
  for (guint i = 0; i < plan->len; i++) {
    HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    if (!hutch_system_grant_socket(entry->socket, qemu_uid, error))
      return FALSE;
  }
  return TRUE;
}

/* What a clone takes from its source (hutch_instance_clone); NULL for a new VM. */
typedef struct {
  const char *overlay;       /* the source's disk */
  const char *host_key;      /* the source's pinned public host key: the guest's until the
                                clone's first start gives it its own */
  const char *instance_dir;  /* the source's, for its provisioning records */
  const char *name;          /* the source's, for `hutch info` */
  gboolean bare;             /* a throwaway copy for `hutch template create`: without the
                                broker (the guest needs no secrets to be generalised) */
} CloneSource;

/* The records a VM takes from what it is made from: provisioned already (its starts do not
 * provision again), the broker's CA and placeholders that the guest already holds. A clone of
 * a VM also keeps the network policy its source has (hutch net may have changed the
 * profile's); a template holds its source's policy in its profile. */
static gboolean copy_records(const char *from_dir, const char *dir, gboolean with_broker,
                             gboolean with_policy, GError **error) {
  const char *records[] = {HUTCH_INSTANCE_PROVISIONED, HUTCH_INSTANCE_OPTIONAL_FAILED,
                           HUTCH_EGRESS_POLICY_FILE, HUTCH_BROKER_FILE,
                           HUTCH_BROKER_CA_KEY, HUTCH_BROKER_CA_CERT, NULL};
  for (int i = 0; records[i]; i++) {
    if (!with_policy && strcmp(records[i], HUTCH_EGRESS_POLICY_FILE) == 0)
      continue;
    if (!with_broker && i >= 3)
      continue;
    g_autofree char *from = g_build_filename(from_dir, records[i], NULL);
    g_autofree char *text = NULL;
    gsize len = 0;
    if (g_file_get_contents(from, &text, &len, NULL) &&
        !write_text(dir, records[i], text, 0600, error))
      return FALSE;
  }
  return TRUE;
}

/* The cache directory of the template a profile's image names, else NULL. */
static char *template_dir_of(const HutchProfile *profile) {
  if (profile->image.kind != HUTCH_IMAGE_TEMPLATE)
    return NULL;
  g_autofree char *images = hutch_image_cache_dir();
  g_autofree char *key = g_strconcat(HUTCH_TEMPLATE_KEY_PREFIX, profile->image.template, NULL);
  return g_build_filename(images, key, NULL);
}

static gboolean create_steps(HutchContext *ctx, virConnectPtr conn, const char *name,
                             HutchProfile *profile, const CloneSource *clone, CreateUndo *undo,
                             GError **error) {
  const char *domain_type = choose_domain_type(conn, profile, error);
  if (!domain_type)
    return FALSE;
  gboolean tcg = strcmp(domain_type, "qemu") == 0;
  guint cpus = 0;
  g_autofree char *cpus_notice = NULL;
  gboolean qemu64 = FALSE;
  if (!hutch_instance_plan_vcpus(profile, tcg, &cpus, &cpus_notice, error) || !tcg_cpu_qemu64(&qemu64, error))
    return FALSE;
  if (!hutch_instance_check_ports(ctx, name, profile->ports, FALSE, error))
    return FALSE;
  g_autofree char *user = NULL;
  guint uid = 0, gid = 0;
  hutch_instance_guest_user(profile, &user, &uid, &gid);
  /* Shares are planned (and refused) before anything is made; the plan is made again, the
   * same, at every start. */
  g_autofree char *runtime_dir = hutch_instance_runtime_dir(name);
  g_autoptr(GPtrArray) share_plan = hutch_instance_plan_shares(profile, runtime_dir, user, error);
  if (!share_plan)
    return FALSE;

  g_autofree char *memory = hutch_format_size(profile->memory);
  g_autofree char *disk = hutch_format_size(profile->disk);
  if (!clone)
    hutch_progress_note(ctx, "creating %s from profile '%s' (%s, %u CPU%s, %s, %s disk)", name,
                        profile->name, tcg ? "tcg" : "kvm", cpus, cpus == 1 ? "" : "s", memory,
                        disk);
  if (cpus_notice)
    hutch_progress_note(ctx, "%s", cpus_notice);

  /* secrets the policy could never let through are refused before anything is made (a
   * clone keeps its source's policy and broker) */
  if (!clone) {
    g_autoptr(HutchEgressPolicy) policy = hutch_profile_egress_policy(profile, error);
    if (!policy || !hutch_broker_check(profile, policy, error))
      return FALSE;
  }

  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, error);
  if (!image)
    return FALSE;

  hutch_progress_begin(ctx, "define", "disk overlay, host key, seed");
  undo->instance_dir = hutch_instance_dir(name);
  g_autofree char *creating_marker =
      g_build_filename(undo->instance_dir, HUTCH_INSTANCE_CREATING, NULL);
  if (g_file_test(creating_marker, G_FILE_TEST_EXISTS)) {
    /* a create that was killed half-way (no domain was defined, or we would not be here) */
    hutch_progress_note(ctx, "removing what an interrupted create of %s left behind", name);
    if (!hutch_rmtree(undo->instance_dir, error))
      return FALSE;
    if (hutch_context_is_system(ctx)) {
      g_autofree char *system_dir = hutch_system_dir(conn, error);
      g_autofree char *vm_dir = system_dir ? hutch_system_vm_dir(system_dir, name) : NULL;
      g_autofree char *run_dir = system_dir ? hutch_system_run_dir(system_dir, name) : NULL;
      if (!vm_dir || !hutch_rmtree(vm_dir, error))
        return FALSE;
      hutch_rmtree(run_dir, NULL);
    }
  }
  if (g_file_test(undo->instance_dir, G_FILE_TEST_EXISTS)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS,
                "%s exists but no domain '%s' does: remove the directory or pick another name",
                undo->instance_dir, name);
    g_clear_pointer(&undo->instance_dir, g_free);  /* not ours to remove */
    return FALSE;
  }
  if (!hutch_mkdir(undo->instance_dir, 0700, error) ||
      !hutch_write_file(creating_marker, "", 0, 0600, error))
    return FALSE;
  const char *dir = undo->instance_dir;

  g_autofree char *profile_yaml = hutch_profile_to_yaml(profile, error);
  if (!profile_yaml || !write_text(dir, HUTCH_INSTANCE_PROFILE, profile_yaml, 0600, error))
    return FALSE;
  /* where each share leads now: every start checks that it still leads there. A clone's
   * shares that its source has are held to where they led for the source (its guest may
   * have redirected one through another share since). */
  g_autofree char *shares_record = g_build_filename(dir, HUTCH_INSTANCE_SHARES, NULL);
  if (clone) {
    g_autofree char *source_profile_path =
        g_build_filename(clone->instance_dir, HUTCH_INSTANCE_PROFILE, NULL);
    g_autofree char *source_record =
        g_build_filename(clone->instance_dir, HUTCH_INSTANCE_SHARES, NULL);
    g_autoptr(HutchProfile) source_profile = hutch_profile_load_file(source_profile_path, error);
    if (!source_profile ||
        !hutch_share_record_carry(source_record, source_profile, shares_record, profile, error))
      return FALSE;
  }
  if (!hutch_share_check_record(share_plan, profile, shares_record, error))
    return FALSE;
  if (image->key &&
      !write_text(dir, HUTCH_INSTANCE_IMAGE_KEY_FILE, image->key, 0600, error))
    return FALSE;
  g_autofree char *overlay = g_build_filename(dir, HUTCH_INSTANCE_DISK, NULL);
  g_autofree char *seed = g_build_filename(dir, HUTCH_INSTANCE_SEED, NULL);
  /* where QEMU opens them: here, or on qemu:///system in the user's directory of the daemon,
   * linked from here (system-private.h) */
  g_autofree char *qemu_overlay = g_strdup(overlay);
  g_autofree char *qemu_seed = g_strdup(seed);
  g_autofree char *qemu_runtime = g_strdup(runtime_dir);
  g_autofree char *qemu_kernel = g_strdup(image->kernel);
  g_autofree char *qemu_initrd = g_strdup(image->initrd);
  gboolean system = hutch_context_is_system(ctx);
  if (system) {
    if (clone) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "clones and templates are not made on qemu:///system yet");
      return FALSE;
    }
    g_autofree char *system_dir = hutch_system_dir(conn, error);
    g_autofree char *run_dir = system_dir ? hutch_system_run_dir(system_dir, name) : NULL;
    uid_t qemu_uid = 0;
    if (!run_dir || !system_sockets_fit(run_dir, name, profile, error) ||
        !hutch_system_qemu_uid(conn, &qemu_uid, error))
      return FALSE;
    g_free(qemu_runtime);
    undo->runtime_link = g_strdup(runtime_dir);
    undo->system_run_dir = g_strdup(run_dir);
    qemu_runtime = system_runtime(conn, name, NULL, error);
    if (!qemu_runtime)
      return FALSE;
    undo->system_vm_dir = hutch_system_vm_dir(system_dir, name);
    if (!hutch_system_mkdir(undo->system_vm_dir, qemu_uid, error))
      return FALSE;
    /* the VM's own disk (no backing file shared with other VMs: libvirt would give it to
     * QEMU's user for good), kernel and initrd; the instance directory's disk is a link */
    g_free(qemu_overlay);
    g_free(qemu_seed);
    qemu_overlay = g_build_filename(undo->system_vm_dir, HUTCH_INSTANCE_DISK, NULL);
    qemu_seed = g_build_filename(undo->system_vm_dir, HUTCH_INSTANCE_SEED, NULL);
    if (!hutch_system_link(qemu_overlay, overlay, error))
      return FALSE;
    const char *boot_files[][2] = {{image->kernel, "vmlinuz"}, {image->initrd, "initrd.img"}};
    char **copies[] = {&qemu_kernel, &qemu_initrd};
    for (guint i = 0; i < G_N_ELEMENTS(boot_files); i++) {
      if (!boot_files[i][0])
        continue;
      g_free(*copies[i]);
      *copies[i] = g_build_filename(undo->system_vm_dir, boot_files[i][1], NULL);
      if (!hutch_system_copy_file(ctx, boot_files[i][0], *copies[i], error))
        return FALSE;
    }
  }
  /* a VM made on a template (a clone of such a VM is a clone: its source's records) */
  g_autofree char *template_dir = clone ? NULL : template_dir_of(profile);
  if (clone) {
    /* the source's disk as an overlay of the same image: what the source changed, without
     * its snapshots; the source is only read */
    if (!hutch_image_copy_overlay(image, clone->overlay, overlay, error) ||
        !copy_records(clone->instance_dir, dir, !clone->bare, TRUE, error))
      return FALSE;
    if (!write_text(dir, HUTCH_INSTANCE_CLONE_PENDING, clone->host_key, 0600, error) ||
        !write_text(dir, HUTCH_INSTANCE_ORIGIN, clone->name, 0600, error))
      return FALSE;
  } else if (system ? !hutch_image_create_copy(image, qemu_overlay, profile->disk, error)
                    : !hutch_image_create_overlay(image, overlay, profile->disk, error)) {
    return FALSE;
  }
  /* only once the VM has its own copies: until then the image is in use (image rm) */
  if (system && !write_text(dir, HUTCH_INSTANCE_CONNECTION, "qemu:///system\n", 0600, error))
    return FALSE;
  if (template_dir) {
    /* a template's disk is provisioned and generalised: the first boot takes the identity
     * this create makes from the seed (hutch-provision identity), and the share table like
     * after `hutch edit` */
    g_autofree char *origin = g_strdup_printf("template %s", profile->image.template);
    if (!copy_records(template_dir, dir, TRUE, FALSE, error) ||
        !write_text(dir, HUTCH_INSTANCE_ORIGIN, origin, 0600, error) ||
        !write_text(dir, HUTCH_INSTANCE_MOUNTS_PENDING, "", 0600, error) ||
        !write_text(dir, HUTCH_INSTANCE_IDENTITY_PENDING, "", 0600, error))
      return FALSE;
  }
  /* the broker's CA and placeholders (a clone's are its source's, a template's VM the
   * template's: on its disk already) */
  g_autofree char *broker_ca = NULL;
  g_auto(GStrv) broker_env = NULL, broker_notes = NULL;
  if (!clone && !template_dir &&
      !hutch_broker_create(profile, name, dir, &broker_ca, &broker_env, &broker_notes, error))
    return FALSE;
  for (char **note = broker_notes; note && *note; note++)
    hutch_progress_note(ctx, "%s", *note);

  /* The guest's host key is made here so that it is known before the first boot: no trust
   * on first use. */
  g_autofree char *host_private = NULL, *host_public = NULL;
  if (!hutch_ssh_generate_keypair(name, &host_private, &host_public, error))
    return FALSE;
  g_strstrip(host_public);
  g_autofree char *host_key_pub_file = g_strconcat(HUTCH_INSTANCE_HOST_KEY, ".pub", NULL);
  if (!write_text(dir, HUTCH_INSTANCE_HOST_KEY, host_private, 0600, error) ||
      !write_text(dir, host_key_pub_file, host_public, 0600, error))
    return FALSE;
  g_autofree char *client_public = NULL;
  g_autofree char *client_key = hutch_ssh_client_key(&client_public, error);
  if (!client_key)
    return FALSE;

  g_autofree char *uuid = g_uuid_string_random();
  g_autofree char *mac = random_mac();
  g_autoptr(GPtrArray) seed_mounts = hutch_share_plan_seed_mounts(share_plan);
  /* the sockets where QEMU reaches them (on the session, where hutch's helpers make them) */
  g_autoptr(GPtrArray) qemu_share_plan =
      strcmp(qemu_runtime, runtime_dir) == 0
          ? g_ptr_array_ref(share_plan)
          : hutch_instance_plan_shares(profile, qemu_runtime, user, error);
  if (!qemu_share_plan)
    return FALSE;
  g_autoptr(GPtrArray) filesystems = hutch_share_plan_domain_fs(qemu_share_plan);

  HutchSeedConfig seed_config = {
      .instance_id = uuid,
      .hostname = name,
      .user_name = user,
      .user_uid = uid,
      .user_gid = gid,
      .authorized_key = client_public,
      .host_key_private = host_private,
      .host_key_public = host_public,
      .mounts = seed_mounts,
      .ready_channel = HUTCH_READY_CHANNEL,
      .mac_address = mac,
      .broker_ca = broker_ca,
      .broker_env = broker_env,
  };
  g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, &seed_config, error);
  if (!docs || !hutch_seed_write_iso(docs, seed, error))
    return FALSE;
  if (system && !hutch_system_copy_file(ctx, seed, qemu_seed, error))
    return FALSE;
  hutch_progress_end(ctx, "define", "disk overlay, host key, seed");

  hutch_progress_begin(ctx, "define", "domain '%s' on %s", name, hutch_context_get_uri(ctx));
  /* on qemu:///system the console and the channels are libvirt's, read through the API */
  g_autofree char *console = system ? NULL : g_build_filename(dir, HUTCH_INSTANCE_CONSOLE, NULL);
  g_autofree char *passt_socket = g_build_filename(qemu_runtime, HUTCH_PASST_SOCKET, NULL);
  g_autofree char *ready_socket =
      system ? NULL : g_build_filename(runtime_dir, HUTCH_RUNTIME_READY_SOCKET, NULL);
  g_autofree char *agent_socket =
      system ? NULL : g_build_filename(runtime_dir, HUTCH_RUNTIME_AGENT_SOCKET, NULL);
  HutchDomainConfig config = {
      .name = name,
      .uuid = uuid,
      .domain_type = domain_type,
      .cpus = cpus,
      .tcg_qemu64 = qemu64,
      .disk_path = qemu_overlay,
      .seed_path = qemu_seed,
      .kernel = qemu_kernel,
      .initrd = qemu_initrd,
      .cmdline = image->cmdline,
      .console_log = console,
      .passt_socket = passt_socket,
      .net_vhost_user = system,
      .system = system,
      .mac = mac,
      .ready_socket = ready_socket,
      .agent_socket = agent_socket,
      .filesystems = filesystems,
      .profile_name = profile->name,
      .ssh_port = 0, /* chosen at each start */
      .instance_dir = dir,
      .runtime_dir = runtime_dir,
      .guest_user = user,
  };
  g_autofree char *xml = hutch_domain_build_xml(profile, &config, error);
  if (!xml)
    return FALSE;
  undo->domain = virDomainDefineXML(conn, xml);
  if (!undo->domain) {
    hutch_set_libvirt_error(error, "defining domain '%s'", name);
    return FALSE;
  }
  if (g_unlink(creating_marker) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "removing %s: %s", creating_marker,
                g_strerror(errno));
    return FALSE;
  }
  hutch_progress_end(ctx, "define", "domain '%s' on %s", name, hutch_context_get_uri(ctx));
  return TRUE;
}

gboolean hutch_instance_create(HutchContext *ctx, const char *name, HutchProfile *profile,
                               GError **error) {
  if (!hutch_name_is_valid(name, error))
    return FALSE;
  if (hutch_context_is_system(ctx) && !system_needs_vhost_user(error)) {
    g_prefix_error(error, "creating '%s': ", name);
    return FALSE;
  }
  virConnectPtr conn = hutch_context_connect(ctx, error);
  if (!conn)
    return FALSE;
  g_autoptr(virDomain) existing = virDomainLookupByName(conn, name);
  if (existing) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS, "a VM named '%s' exists already",
                name);
    return FALSE;
  }
  /* before anything is downloaded or built: this is rarely a VM to make anew */
  g_autofree char *dir = hutch_instance_dir(name);
  if (is_instance_dir(dir)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS,
                "creating '%s': its files are in %s already, but libvirt knows no such domain: "
                "%s",
                name, dir, HUTCH_INSTANCE_MISSING_HINT);
    return FALSE;
  }
  /* on a template: its user, steps, environment and secrets, this profile's machine */
  g_autoptr(HutchProfile) on_template = NULL;
  if (profile->image.kind == HUTCH_IMAGE_TEMPLATE) {
    on_template = hutch_template_adopt(profile, error);
    if (!on_template) {
      g_prefix_error(error, "creating '%s': ", name);
      return FALSE;
    }
    profile = on_template;
  }
  CreateUndo undo = {0};
  gboolean ok = create_steps(ctx, conn, name, profile, NULL, &undo, error);
  if (!ok) {
    create_undo(&undo);
    g_prefix_error(error, "creating '%s': ", name);
  } else if (undo.domain) {
    virDomainFree(undo.domain);
    hutch_ssh_config_refresh(ctx);
  }
  create_undo_clear(&undo);
  return ok;
}

static HutchProfile *instance_profile(HutchInstance *instance, GError **error);
static HutchSsh *connect_instance(HutchInstance *instance, guint wait_s, GError **error);

gboolean hutch_instance_first_boot_done(const char *instance_dir) {
  g_autofree char *stamp = g_build_filename(instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  g_autofree char *pending = g_build_filename(instance_dir, HUTCH_INSTANCE_IDENTITY_PENDING, NULL);
  return g_file_test(stamp, G_FILE_TEST_EXISTS) && !g_file_test(pending, G_FILE_TEST_EXISTS);
}

/* Creates name from the defined domain of the same name checked not to exist, with the
 * progress and undo of a create. */
static gboolean create_named(HutchContext *ctx, const char *name, HutchProfile *profile,
                             const CloneSource *clone, const char *what, GError **error) {
  /* a VM root could not start: refused before anything is made */
  if (!hutch_context_check_may_run_vms(ctx, error))
    return FALSE;
  virConnectPtr conn = hutch_context_connect(ctx, error);
  if (!conn)
    return FALSE;
  g_autoptr(virDomain) existing = virDomainLookupByName(conn, name);
  g_autofree char *dir = hutch_instance_dir(name);
  if (existing || is_instance_dir(dir)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS, "a VM named '%s' exists already", name);
    return FALSE;
  }
  CreateUndo undo = {0};
  gboolean ok = create_steps(ctx, conn, name, profile, clone, &undo, error);
  if (ok && clone) {
    /* the disk's fstab holds the source's shares: the first start gives it the clone's */
    g_autofree char *pending = g_build_filename(undo.instance_dir, HUTCH_INSTANCE_MOUNTS_PENDING,
                                                NULL);
    ok = hutch_write_file(pending, "", 0, 0600, error);
  }
  if (!ok) {
    create_undo(&undo);
    g_prefix_error(error, "%s: ", what);
  } else if (undo.domain) {
    virDomainFree(undo.domain);
    hutch_ssh_config_refresh(ctx);
  }
  create_undo_clear(&undo);
  return ok;
}

static gboolean clone_vm(HutchContext *ctx, HutchInstance *src, const char *name,
                         const HutchEdit *edit, gboolean bare, GError **error) {
  const char *source = src->name;
  if (hutch_instance_is_active(src)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "%s is running: hutch stop %s first (a clone copies a stopped disk)", source,
                source);
    return FALSE;
  }
  if (!hutch_instance_first_boot_done(src->meta->instance_dir)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "%s has not finished its first boot: hutch start %s, then stop it and clone",
                source, source);
    return FALSE;
  }
  if (edit && edit->disk) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "a clone has its source's disk size (hutch edit %s --disk grows it later)", name);
    return FALSE;
  }
  g_autoptr(HutchProfile) profile = instance_profile(src, error);
  if (!profile)
    return FALSE;
  if (bare) {
    hutch_profile_clear_shares(profile);
    hutch_profile_clear_ports(profile);
  }
  g_autofree char *guest_home = g_build_filename("/home", src->meta->guest_user, NULL);
  if (edit && !hutch_edit_apply(profile, edit, guest_home, error))
    return FALSE;
  g_autofree char *host_key = hutch_instance_host_key(src, error);
  if (!host_key)
    return FALSE;
  g_autofree char *overlay = g_build_filename(src->meta->instance_dir, HUTCH_INSTANCE_DISK, NULL);
  CloneSource clone = {
      .overlay = overlay,
      .host_key = host_key,
      .instance_dir = src->meta->instance_dir,
      .name = source,
      .bare = bare};
  if (!bare)
    hutch_progress_note(ctx, "cloning %s as %s (its disk, profile and provisioning)", source,
                        name);
  g_autofree char *what = g_strdup_printf("cloning '%s' as '%s'", source, name);
  return create_named(ctx, name, profile, &clone, what, error);
}

gboolean hutch_instance_clone(HutchContext *ctx, const char *source, const char *name,
                              const HutchEdit *edit, GError **error) {
  if (!hutch_context_check_not_system(ctx, "clones", error))
    return FALSE;
  if (!hutch_name_is_valid(name, error))
    return FALSE;
  g_autoptr(GError) lookup_error = NULL;
  g_autoptr(HutchInstance) src = hutch_instance_lookup(ctx, source, &lookup_error);
  if (src) {
    if (hutch_template_exists(source))
      hutch_progress_note(ctx, "'%s' is a VM and a template: cloning the VM (for the template: "
                               "hutch create %s --template %s)",
                          source, name, source);
    return clone_vm(ctx, src, name, edit, FALSE, error);
  }
  if (!g_error_matches(lookup_error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND) ||
      !hutch_template_exists(source)) {
    g_propagate_error(error, g_steal_pointer(&lookup_error));
    return FALSE;
  }
  /* no VM of that name, but a template: a new VM on it, with the edit's shares and ports */
  g_autoptr(HutchProfile) profile = hutch_template_profile(source, error);
  if (!profile)
    return FALSE;
  g_autofree char *user = NULL;
  guint uid = 0, gid = 0;
  hutch_instance_guest_user(profile, &user, &uid, &gid);
  g_autofree char *guest_home = g_build_filename("/home", user, NULL);
  if (edit && !hutch_edit_apply(profile, edit, guest_home, error))
    return FALSE;
  hutch_progress_note(ctx, "making %s from template %s (provisioned already)", name, source);
  g_autofree char *what = g_strdup_printf("making '%s' from template '%s'", name, source);
  return create_named(ctx, name, profile, NULL, what, error);
}

gboolean hutch_instance_clone_bare(HutchContext *ctx, const char *source, const char *name,
                                   GError **error) {
  if (!hutch_context_check_not_system(ctx, "clones", error))
    return FALSE;
  g_autoptr(HutchInstance) src = hutch_instance_lookup(ctx, source, error);
  if (!src || !clone_vm(ctx, src, name, NULL, TRUE, error))
    return FALSE;
  g_autofree char *dir = hutch_instance_dir(name);
  g_autofree char *marker = g_build_filename(dir, HUTCH_INSTANCE_TEMPLATE_COPY, NULL);
  return hutch_write_file(marker, "", 0, 0600, error);
}

int hutch_instance_exec(HutchContext *ctx, const char *name, const char *command,
                        const char *input, char **ret_err, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return -1;
  g_autoptr(HutchSsh) ssh = connect_instance(instance, 60, error);
  if (!ssh)
    return -1;
  return hutch_ssh_exec_capture(ssh, command, input, NULL, ret_err, error);
}

/* ---- start and readiness -------------------------------------------------------------- */

gboolean hutch_instance_set_meta(virDomainPtr domain, const char *element, const char *text,
                                 GError **error) {
  g_autofree char *xml =
      virDomainGetMetadata(domain, VIR_DOMAIN_METADATA_ELEMENT, HUTCH_METADATA_NS, 0);
  if (!xml) {
    hutch_set_libvirt_error(error, "reading metadata");
    return FALSE;
  }
  xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "metadata.xml", NULL, XML_PARSE_NONET);
  if (!doc) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the domain's hutch metadata is not XML");
    return FALSE;
  }
  xmlNodePtr root = xmlDocGetRootElement(doc);
  gboolean found = FALSE;
  for (xmlNodePtr child = root ? root->children : NULL; child; child = child->next) {
    if (child->type == XML_ELEMENT_NODE && xmlStrEqual(child->name, BAD_CAST element)) {
      xmlNodeSetContent(child, BAD_CAST text);
      found = TRUE;
    }
  }
  if (!found && root)
    xmlNewTextChild(root, root->ns, BAD_CAST element, BAD_CAST text);
  xmlChar *out = NULL;
  int len = 0;
  xmlDocDumpMemory(doc, &out, &len);
  xmlFreeDoc(doc);
  int rc = virDomainSetMetadata(domain, VIR_DOMAIN_METADATA_ELEMENT, (const char *)out,
                                HUTCH_METADATA_PREFIX, HUTCH_METADATA_NS,
                                VIR_DOMAIN_AFFECT_CONFIG);
  xmlFree(out);
  if (rc < 0) {
    hutch_set_libvirt_error(error, "recording <%s> in the domain's metadata", element);
    return FALSE;
  }
  return TRUE;
}

/* Only the file's last CONSOLE_TAIL_BYTES are read, each line cut to CONSOLE_TAIL_LINE_MAX
 * bytes. */
#define CONSOLE_TAIL_BYTES (64 * 1024)
#define CONSOLE_TAIL_LINE_MAX 1024

/* Drops ESC [ ... sequences (systemd's colours: "[ESC[0;1;31mFAILED ESC[0m]") in place, so
 * that what the sanitiser keeps reads "[FAILED]"; anything else is left to it. */
static gsize strip_csi(char *raw, gsize len) {
  gsize out = 0;
  for (gsize i = 0; i < len; i++) {
    if (raw[i] == '\x1b' && i + 1 < len && raw[i + 1] == '[') {
      gsize j = i + 2;
      while (j < len && (guchar)raw[j] >= 0x20 && (guchar)raw[j] <= 0x3f)
        j++; /* parameter and intermediate bytes */
      if (j < len && (guchar)raw[j] >= 0x40 && (guchar)raw[j] <= 0x7e) {
        i = j; /* the final byte: the whole sequence goes */
        continue;
      }
    }
    raw[out++] = raw[i];
  }
  return out;
}

char *hutch_console_tail(const char *path, guint count) {
  gsize len = 0;
  g_autofree char *raw = hutch_read_file_part(path, CONSOLE_TAIL_BYTES, TRUE, &len, NULL);
  if (!raw)
    return g_strdup("(no console log)");
  len = strip_csi(raw, len);
  /* consoles print \r\n and escape sequences: HUTCH_TEXT_LINES keeps only the lines */
  g_autofree char *text = hutch_text_sanitize(raw, (gssize)len, HUTCH_TEXT_LINES);
  g_auto(GStrv) lines = g_strsplit(g_strchomp(text), "\n", -1);
  guint n = g_strv_length(lines);
  guint first = n > count ? n - count : 0;
  GString *out = g_string_new(NULL);
  for (guint i = first; i < n; i++) {
    hutch_text_truncate(lines[i], CONSOLE_TAIL_LINE_MAX);
    g_string_append_printf(out, "\n%s", lines[i]);
  }
  return g_string_free(out, FALSE);
}

#define CONSOLE_BOOT_BYTES (256 * 1024)

char *hutch_console_failures(const char *path, guint max) {
  gsize len = 0;
  g_autofree char *raw = hutch_read_file_part(path, CONSOLE_BOOT_BYTES, TRUE, &len, NULL);
  if (!raw)
    return NULL;
  len = strip_csi(raw, len);
  g_autofree char *text = hutch_text_sanitize(raw, (gssize)len, HUTCH_TEXT_LINES);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  guint first = 0;
  for (guint i = 0; lines[i]; i++)
    if (strstr(lines[i], "Linux version "))
      first = i;
  GString *out = g_string_new(NULL);
  guint kept = 0;
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = first; lines[i] && kept < max; i++) {
    if (!strstr(lines[i], "FAILED") && !strstr(lines[i], "Failed to start"))
      continue;
    hutch_text_truncate(lines[i], CONSOLE_TAIL_LINE_MAX);
    g_strstrip(lines[i]);
    /* a unit restarted on failure says so each time: once is enough */
    if (!g_hash_table_add(seen, lines[i]))
      continue;
    g_string_append_printf(out, "\n%s", lines[i]);
    kept++;
  }
  if (out->len == 0) {
    g_string_free(out, TRUE);
    return NULL;
  }
  return g_string_free(out, FALSE);
}

static int connect_unix(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path))
    return -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Where the ready channel is read: the socket libvirt bound for it (session), or libvirt's
 * streams of the channel and the console (qemu:///system, where both are libvirt's own
 * sockets). The streams are read without blocking: libvirt's client queues what arrives for
 * them while it waits for the reply of any call on the connection, so each round of waiting
 * makes one (virDomainIsActive). */
typedef struct {
  int fd;
  virStreamPtr ready;
  virStreamPtr console;
  int console_fd;       /* the instance's console.log, or -1 */
  guint64 console_left; /* bytes it may still take this boot */
} ReadySource;

/* a boot's console on qemu:///system, at most (the guest writes what it likes) */
#define SYSTEM_CONSOLE_MAX (8u << 20)

static void ready_source_close(ReadySource *src) {
  if (src->fd >= 0)
    close(src->fd);
  if (src->console_fd >= 0)
    close(src->console_fd);
  virStreamPtr streams[] = {src->ready, src->console};
  for (guint i = 0; i < G_N_ELEMENTS(streams); i++) {
    if (!streams[i])
      continue;
    virStreamAbort(streams[i]);
    virStreamFree(streams[i]);
  }
  virResetLastError();
  *src = (ReadySource){.fd = -1, .console_fd = -1};
}

static gboolean ready_source_open(HutchContext *ctx, HutchInstance *instance, double deadline,
                                  ReadySource *src, GError **error) {
  *src = (ReadySource){.fd = -1, .console_fd = -1};
  if (hutch_context_is_system(ctx)) {
    virConnectPtr conn = virDomainGetConnect(instance->domain);
    src->ready = virStreamNew(conn, VIR_STREAM_NONBLOCK);
    if (!src->ready || virDomainOpenChannel(instance->domain, HUTCH_READY_CHANNEL, src->ready,
                                            VIR_DOMAIN_CHANNEL_FORCE) < 0) {
      hutch_set_libvirt_error(error, "opening the ready channel");
      ready_source_close(src);
      return FALSE;
    }
    /* the console, into console.log for `hutch logs` and the errors below: what this boot
     * printed while hutch waited (nothing reads it later; libvirt's own log is root's) */
    g_autofree char *log =
        g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CONSOLE, NULL);
    src->console = virStreamNew(conn, VIR_STREAM_NONBLOCK);
    src->console_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    src->console_left = SYSTEM_CONSOLE_MAX;
    if (!src->console || src->console_fd < 0 ||
        virDomainOpenConsole(instance->domain, NULL, src->console, 0) < 0) {
      hutch_progress_note(ctx,
                          "the console of '%s' cannot be read: hutch logs will not show "
                          "this boot",
                          instance->name);
      if (src->console) {
        virStreamFree(src->console);
        src->console = NULL;
      }
      virResetLastError();
    }
    return TRUE;
  }
  g_autofree char *socket_path =
      g_build_filename(instance->meta->runtime_dir, HUTCH_RUNTIME_READY_SOCKET, NULL);
  while (src->fd < 0 && hutch_now() < deadline) {
    src->fd = connect_unix(socket_path);
    if (src->fd < 0)
      g_usleep(100 * 1000);
  }
  if (src->fd < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "cannot connect to %s: %s", socket_path,
                g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

static void drain_console(ReadySource *src) {
  char buf[16384];
  int n;
  while (src->console && (n = virStreamRecv(src->console, buf, sizeof(buf))) > 0) {
    gsize keep = MIN((guint64)n, src->console_left);
    if (keep && write(src->console_fd, buf, keep) == (ssize_t)keep)
      src->console_left -= keep;
  }
  virResetLastError();
}

/* Up to a second's wait for the ready channel's bytes: how many were read into buf, 0 when
 * none came, -1 when the channel is closed (the domain is gone). */
static gssize ready_source_read(ReadySource *src, HutchInstance *instance, char *buf, gsize len) {
  if (!src->ready) {
    struct pollfd pfd = {.fd = src->fd, .events = POLLIN};
    if (poll(&pfd, 1, 1000) <= 0)
      return 0;
    ssize_t got = read(src->fd, buf, len);
    return got > 0 ? got : -1;
  }
  for (int round = 0; round < 10; round++) {
    drain_console(src);
    int n = virStreamRecv(src->ready, buf, len);
    if (n > 0)
      return n;
    if (n != -2) {
      virResetLastError();
      return -1;
    }
    g_usleep(100 * 1000);
    hutch_instance_is_active(instance); /* brings what libvirt has for the streams */
  }
  return 0;
}

/* How long a start tries SSH when the guest said its sshd failed (HUTCH_READY_WARN_SSHD_FAILED):
 * one attempt's handshake at least, not the minute an sshd still coming up gets. */
#define SSHD_FAILED_WAIT_S 5

/* Reads the ready channel until READY or FAILED, the domain stops, or the timeout. The
 * guest's warnings go to *ret_warnings (NULL when none), for an error that comes later, and
 * whether one said sshd failed to *ret_sshd_failed. */
static gboolean wait_ready_channel(HutchContext *ctx, HutchInstance *instance, guint timeout_s,
                                   char **ret_warnings, gboolean *ret_sshd_failed, GError **error) {
  g_autofree char *console =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CONSOLE, NULL);
  double deadline = hutch_now() + timeout_s;
  ReadySource src;
  if (!ready_source_open(ctx, instance, deadline, &src, error))
    return FALSE;
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(ctx);
  HutchReadyState state = HUTCH_READY_WAITING;
  while (state == HUTCH_READY_WAITING) {
    if (hutch_now() > deadline) {
      g_autofree char *tail = hutch_console_tail(console, 15);
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_TIMEOUT,
                  "'%s' was not ready within %u s (boot_timeout); the console's last lines "
                  "(hutch logs %s):%s",
                  instance->name, timeout_s, instance->name, tail);
      break;
    }
    char buf[512];
    gssize got = ready_source_read(&src, instance, buf, sizeof(buf));
    if (got > 0) {
      state = hutch_ready_report_feed(report, buf, (gsize)got);
      continue;
    }
    /* closed: QEMU closed the channel, the domain is gone */
    if (got < 0)
      g_usleep(200 * 1000);
    if (!hutch_instance_is_active(instance)) {
      g_autofree char *tail = hutch_console_tail(console, 15);
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "'%s' stopped while booting; the console's last lines:%s", instance->name,
                  tail);
      break;
    }
  }
  ready_source_close(&src);
  hutch_ready_report_end(report);
  *ret_warnings = hutch_ready_report_warnings(report);
  *ret_sshd_failed = hutch_ready_report_has_warning(report, HUTCH_READY_WARN_SSHD_FAILED);
  if (state == HUTCH_READY_FAILED)
    hutch_ready_report_set_error(report, instance->name, error);
  g_autofree char *summary =
      state == HUTCH_READY_OK ? hutch_ready_report_summary(report, instance->name) : NULL;
  if (summary) {
    hutch_progress_note(ctx, "%s", summary);
    /* kept for `hutch info`: later boots do not provision again */
    g_autofree char *text = hutch_ready_report_failed_text(report);
    g_autofree char *path =
        g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_OPTIONAL_FAILED, NULL);
    hutch_write_file(path, text, strlen(text), 0600, NULL);
  }
  return state == HUTCH_READY_OK;
}

/* Between SSH tries: a domain that stopped is not waited for (a supervisor started just
 * before a delete waited 30 s). */
static gboolean still_running(gpointer data, GError **error) {
  HutchInstance *instance = data;
  if (hutch_instance_is_active(instance))
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "'%s' stopped while hutch connected to it",
              instance->name);
  return FALSE;
}

/* Connects over SSH with the pinned key, retrying while sshd is not up yet. */
static HutchSsh *connect_instance(HutchInstance *instance, guint wait_s, GError **error) {
  g_autofree char *host_key = hutch_instance_host_key(instance, error);
  if (!host_key)
    return NULL;
  g_autofree char *client_key = hutch_ssh_client_key(NULL, error);
  if (!client_key)
    return NULL;
  if (instance->meta->ssh_port == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "'%s' is not running (hutch start %s)",
                instance->name, instance->name);
    return NULL;
  }
  g_autoptr(GError) local = NULL;
  HutchSsh *ssh =
      hutch_ssh_connect_retrying(instance->meta->ssh_port, instance->meta->guest_user, client_key,
                                 host_key, wait_s, -1, still_running, instance, &local);
  if (ssh)
    return ssh;
  if (g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_STATE))
    g_propagate_error(error, g_steal_pointer(&local));
  else
    g_propagate_prefixed_error(error, g_steal_pointer(&local),
                               "connecting to '%s': ", instance->name);
  return NULL;
}

HutchSsh *hutch_instance_connect(HutchContext *ctx, const char *name, GError **error) {
  return hutch_instance_connect_within(ctx, name, 30, error);
}

HutchSsh *hutch_instance_connect_within(HutchContext *ctx, const char *name, guint wait_s,
                                        GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  if (!hutch_instance_is_active(instance)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "'%s' is not running (hutch start %s)",
                name, name);
    return NULL;
  }
  return connect_instance(instance, wait_s, error);
}

/* passt and virtiofsd exit by themselves when QEMU goes away; this also catches the ones
 * that never saw QEMU (a start that failed on the way). */
void hutch_instance_stop_helpers(const char *runtime_dir) {
  hutch_egress_stop(runtime_dir);
  hutch_net_stop(runtime_dir);
  hutch_share_stop(runtime_dir);
  hutch_forward_stop_all(runtime_dir);
}

HutchEgressPolicy *hutch_instance_egress_policy(const char *instance_dir,
                                                const HutchProfile *profile, GError **error) {
  g_autoptr(GError) local = NULL;
  HutchEgressPolicy *policy = hutch_egress_policy_load(instance_dir, &local);
  if (policy)
    return policy;
  if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_propagate_error(error, g_steal_pointer(&local));
    return NULL;
  }
  g_autoptr(HutchEgressPolicy) from_profile = hutch_profile_egress_policy(profile, error);
  if (!from_profile || !hutch_egress_policy_save(from_profile, instance_dir, error))
    return NULL;
  return g_steal_pointer(&from_profile);
}

static HutchProfile *instance_profile(HutchInstance *instance, GError **error) {
  g_autofree char *path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROFILE, NULL);
  return hutch_profile_load_file(path, error);
}

/* The last line of what a guest command wrote to stderr (the guest's words: sanitised, cut
 * to 200 bytes), for a message. */
static char *guest_last_line(const char *err_text) {
  g_autofree char *text = g_strchomp(g_strdup(err_text ? err_text : ""));
  const char *nl = strrchr(text, '\n');
  char *last = hutch_text_sanitize(nl ? nl + 1 : text, -1, HUTCH_TEXT_LINE);
  hutch_text_truncate(last, 200);
  return last;
}

/* The guest said READY but SSH did not answer (sshd failed, its network did not come up):
 * what the guest warned of and the console's last lines (systemd's boot messages) join the
 * error, which is often all that is left of a failed start to explain it. */
static void explain_unreachable(HutchInstance *instance, const char *guest_warnings,
                                GError **error) {
  if (!error || !*error || g_error_matches(*error, HUTCH_ERROR, HUTCH_ERROR_HOST_KEY))
    return;
  g_autofree char *console =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CONSOLE, NULL);
  g_autofree char *tail = hutch_console_tail(console, 15);
  g_autofree char *failures = hutch_console_failures(console, 10);
  g_autofree char *message = g_strdup_printf(
      "%s%s%s%s%s; the console's last lines (hutch logs %s):%s", (*error)->message,
      guest_warnings ? "; the guest warned: " : "", guest_warnings ? guest_warnings : "",
      failures ? "; units that failed at boot:" : "", failures ? failures : "", instance->name,
      tail);
  g_free((*error)->message);
  (*error)->message = g_steal_pointer(&message);
}

/* A clone's first start: the guest is its source's (host key, hostname, machine-id), reached
 * with the source's pinned key. It gets its own: the host key hutch made for it (then pinned),
 * its name, a new machine-id; sshd is restarted and reached again with the new pin, which
 * must hold from here on. *ssh is replaced by that new connection. */
static gboolean apply_clone_identity(HutchContext *ctx, HutchInstance *instance, HutchSsh **ssh,
                                     GError **error) {
  g_autofree char *pending =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_CLONE_PENDING, NULL);
  if (!g_file_test(pending, G_FILE_TEST_EXISTS))
    return TRUE;
  hutch_progress_begin(ctx, "identity", "the clone's own host key, hostname and machine-id");
  g_autofree char *key_path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_HOST_KEY, NULL);
  g_autofree char *private_key = NULL;
  if (!g_file_get_contents(key_path, &private_key, NULL, error))
    return FALSE;
  g_autofree char *quoted_name = g_shell_quote(instance->name);
  /* the name is a valid instance name (letters, digits, '-'): safe in sed and hosts */
  g_autofree char *command = g_strdup_printf(
      "sudo -n sh -c 'set -e; name=$1; umask 077; k=/etc/ssh/ssh_host_ed25519_key; "
      "cat > $k.new; ssh-keygen -y -f $k.new > $k.pub.new; mv -f $k.new $k; "
      "mv -f $k.pub.new $k.pub; chmod 644 $k.pub; "
      "rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key* /etc/ssh/ssh_host_dsa_key*; "
      "echo $name > /etc/hostname; hostname $name; "
      "sed -i \"s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1 $name/\" /etc/hosts; "
      "rm -f /etc/machine-id /var/lib/dbus/machine-id; systemd-machine-id-setup >/dev/null; "
      "(systemctl restart ssh || systemctl restart sshd) </dev/null' sh %s",
      quoted_name);
  g_autofree char *err_text = NULL;
  int status = hutch_ssh_exec_capture(*ssh, command, private_key, NULL, &err_text, error);
  if (status < 0)
    return FALSE;
  if (status != 0) {
    g_autofree char *last = guest_last_line(err_text);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "giving the clone its own identity failed (exit %d: %s)", status, last);
    return FALSE;
  }
  /* from here on only the clone's own key is accepted */
  g_unlink(pending);
  g_clear_pointer(ssh, hutch_ssh_free);
  *ssh = connect_instance(instance, 60, error);
  if (!*ssh)
    return FALSE;
  hutch_progress_end(ctx, "identity", "the clone's own host key, hostname and machine-id");
  return TRUE;
}

/* After `hutch edit` changed the shares, the guest still mounts its first boot's table (and
 * the boot has just done so, under tags that may now name other shares): give it the new
 * one. Failing leaves the stamp for the next start and is a notice, not a failed start: the
 * guest is up, and the user can mount by hand. */
static gboolean apply_guest_mounts(HutchContext *ctx, HutchInstance *instance, HutchSsh *ssh,
                                   GPtrArray *share_plan, GError **error) {
  g_autofree char *pending =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_MOUNTS_PENDING, NULL);
  if (!g_file_test(pending, G_FILE_TEST_EXISTS))
    return TRUE;
  g_autoptr(GPtrArray) mounts = hutch_share_plan_seed_mounts(share_plan);
  g_autofree char *table = hutch_seed_mount_table(mounts);
  g_autofree char *err_text = NULL;
  g_autoptr(GError) local = NULL;
  int status = hutch_ssh_exec_capture(ssh, "sudo -n " HUTCH_SEED_GUEST_RUNNER " mounts", table,
                                      NULL, &err_text, &local);
  if (status < 0) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  if (status != 0) {
    /* the guest's words: their last line, made safe to print and cut short */
    g_autofree char *last = guest_last_line(err_text);
    hutch_progress_note(ctx,
                        "the guest did not take its new share table (exit %d: %s); mount "
                        "a share by hand (sudo mount -t virtiofs hutchfsN PATH) or start "
                        "again to retry",
                        status, last);
    return TRUE;
  }
  g_unlink(pending);
  hutch_progress_note(ctx, "the guest mounts its %u shared folder%s as edited", mounts->len,
                      mounts->len == 1 ? "" : "s");
  return TRUE;
}

/* The domain's network back end as this host's passt serves it best (vhost-user where passt
 * offers it, a stream socket elsewhere), decided at each start: a VM made before passt was
 * upgraded (or on another host) gets the path this one has. */
static gboolean set_net_backend(HutchInstance *instance, gboolean vhost_user, GError **error) {
  g_autofree char *xml = virDomainGetXMLDesc(instance->domain, VIR_DOMAIN_XML_INACTIVE);
  if (!xml) {
    hutch_set_libvirt_error(error, "reading the domain's definition");
    return FALSE;
  }
  g_autofree char *socket = g_build_filename(instance->meta->runtime_dir, HUTCH_PASST_SOCKET, NULL);
  gboolean changed = FALSE;
  g_autofree char *wanted = hutch_domain_set_net_backend(xml, socket, vhost_user, &changed, error);
  if (!wanted)
    return FALSE;
  if (!changed)
    return TRUE;
  g_autoptr(virDomain) defined = virDomainDefineXML(virDomainGetConnect(instance->domain), wanted);
  if (!defined) {
    hutch_set_libvirt_error(error, "setting the domain's network back end (%s)",
                            vhost_user ? "passt's vhost-user" : "a stream socket");
    return FALSE;
  }
  return TRUE;
}

/* The helpers of one run: a virtiofsd per share, then passt (or the egress helper, with its
 * passt), listening for SSH on ssh_port. Each share must still lead to the directory it did
 * at create (instances created before this record existed get it now; `create: true`
 * directories are made first, so that their identity is recorded too); the directories
 * checked are the ones virtiofsd gets. The egress helper's secrets: in helper_env, or (from a
 * supervisor, which must not hold them) secrets_fd, handed on unread (hutch_egress_start).
 * On failure, nothing of them runs. */
static gboolean start_helpers(HutchContext *ctx, HutchInstance *instance, char **helper_env,
                              int secrets_fd, guint ssh_port, GError **error) {
  if (!hutch_context_check_may_run_vms(ctx, error))
    return FALSE;
  g_autoptr(HutchProfile) profile = instance_profile(instance, error);
  if (!profile)
    return FALSE;
  /* passt's back end (HUTCH_PASST_VHOST_USER may refuse) and the network policy (a broken
   * policy file refuses), before any helper starts */
  gboolean vhost_user = FALSE;
  if (!hutch_net_vhost_user(&vhost_user, error))
    return FALSE;
  g_autoptr(HutchEgressPolicy) policy =
      hutch_instance_egress_policy(instance->meta->instance_dir, profile, error);
  if (!policy)
    return FALSE;
  g_autoptr(GPtrArray) share_plan = hutch_instance_plan_shares(profile, instance->meta->runtime_dir,
                                                               instance->meta->guest_user, error);
  if (!share_plan)
    return FALSE;
  g_autofree char *shares_record =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_SHARES, NULL);
  if (!hutch_share_prepare(share_plan, profile, shares_record, error))
    return FALSE;
  if (share_plan->len > 0) {
    hutch_progress_begin(ctx, "shares", "virtiofsd for %u folder%s", share_plan->len,
                         share_plan->len == 1 ? "" : "s");
    g_autofree char *guest_name = NULL;
    guint guest_uid = 0, guest_gid = 0;
    hutch_instance_guest_user(profile, &guest_name, &guest_uid, &guest_gid);
    if (!hutch_share_start(share_plan, guest_uid, guest_gid, error))
      return FALSE;
    hutch_progress_end(ctx, "shares", "virtiofsd for %u folder%s", share_plan->len,
                       share_plan->len == 1 ? "" : "s");
    /* unprivileged, virtiofsd has the user's hard open-file limit (root's gets 1,000,000) */
    struct rlimit nofile = {0};
    if (geteuid() != 0 && getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
        nofile.rlim_max != RLIM_INFINITY) {
      for (guint i = 0; i < share_plan->len; i++) {
        g_autofree char *crowded =
            hutch_share_crowded(g_ptr_array_index(share_plan, i), (guint64)nofile.rlim_max);
        if (crowded)
          hutch_progress_note(ctx, "%s", crowded);
      }
    }
  }

  const char *mode = hutch_egress_mode_to_string(policy->mode);
  const char *backend = vhost_user ? ", vhost-user" : "";
  hutch_progress_begin(ctx, "network", "passt (egress: %s%s), SSH on 127.0.0.1:%u", mode, backend,
                       ssh_port);
  gboolean network_up =
      set_net_backend(instance, vhost_user, error) &&
      (policy->mode == HUTCH_EGRESS_UNRESTRICTED
           ? hutch_net_start(instance->meta->runtime_dir, ssh_port, profile->ports, vhost_user,
                             error)
           : hutch_egress_start(ctx, instance->meta->instance_dir, instance->meta->runtime_dir,
                                ssh_port, profile->ports, vhost_user, helper_env, secrets_fd,
                                error));
  if (!network_up) {
    hutch_instance_stop_helpers(instance->meta->runtime_dir);
    return FALSE;
  }
  hutch_progress_end(ctx, "network", "passt (egress: %s%s), SSH on 127.0.0.1:%u", mode, backend,
                     ssh_port);
  return TRUE;
}

gboolean hutch_instance_start_helpers(HutchContext *ctx, const char *name, guint ssh_port,
                                      int secrets_fd, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  if (hutch_instance_is_active(instance)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "'%s' is running already", name);
    return FALSE;
  }
  g_auto(GStrv) env = g_get_environ();
  return start_helpers(ctx, instance, env, secrets_fd, ssh_port, error);
}

static gboolean start_steps(HutchContext *ctx, HutchInstance *instance, gboolean wait_ready,
                            int *ret_boot_fd, GError **error) {
  if (!hutch_context_check_may_run_vms(ctx, error))
    return FALSE;
  g_autoptr(HutchProfile) profile = instance_profile(instance, error);
  if (!profile)
    return FALSE;
  if (!hutch_instance_check_ports(ctx, instance->name, profile->ports, TRUE, error))
    return FALSE;
  /* qemu:///system: the sockets QEMU connects to are in the user's directory of the daemon,
   * which the runtime directory links to */
  g_autofree char *qemu_runtime = NULL;
  g_autofree char *system_dir = NULL;
  g_autofree char *system_seed = NULL; /* the seed's copy for QEMU (qemu:///system) */
  if (hutch_context_is_system(ctx)) {
    if (!system_needs_vhost_user(error) ||
        !(qemu_runtime = system_runtime(virDomainGetConnect(instance->domain), instance->name,
                                        &system_dir, error)))
      return FALSE;
  } else if (!hutch_mkdir(instance->meta->runtime_dir, 0700, error)) {
    return FALSE;
  }
  /* the supervisor of the VM's last run exits when its domain stops, stopping that run's
   * helpers: it must be gone before this run's start */
  hutch_supervisor_wait_gone(instance->meta->runtime_dir, 5000);
  /* qemu:///system, once that supervisor is gone (it takes the VM's files back too, and would
   * remove the seed's new copy): the files taken back, a fresh copy of the seed */
  if (system_dir && (!system_reclaim_in(ctx, system_dir, instance->name, error) ||
                     !(system_seed = system_refresh_seed(ctx, system_dir, instance, error))))
    return FALSE;
  /* a forward of an earlier run (its domain stopped while no supervisor watched) is not
   * this run's: the new supervisor must not serve it again */
  hutch_forward_stop_all(instance->meta->runtime_dir);
  guint ssh_port = hutch_net_free_port(error);
  if (!ssh_port)
    return FALSE;
  g_autofree char *port_text = g_strdup_printf("%u", ssh_port);

  /* The helpers are started by this run's supervisor, which is started first for that, so
   * that they are its children; where there is none to start (a library caller, start
   * --foreground, which becomes the supervisor itself), by this process. The secrets' host
   * variables are for the egress helper only (it wipes its copy), never for virtiofsd or the
   * supervisor, which parse what the guest sends. */
  g_auto(GStrv) secret_vars = hutch_broker_env_names(instance->meta->instance_dir);
  g_auto(GStrv) helper_env = g_get_environ();
  for (char **v = secret_vars; v && *v; v++)
    g_unsetenv(*v);
  gboolean helpers_up;
  *ret_boot_fd = -1;
  if (hutch_supervisor_boot_possible(ctx))
    helpers_up = hutch_supervisor_boot(ctx, instance->name, instance->meta->runtime_dir, ssh_port,
                                       secret_vars, helper_env, ret_boot_fd, error);
  else
    helpers_up = start_helpers(ctx, instance, helper_env, -1, ssh_port, error);
  g_clear_pointer(&helper_env, g_strfreev); /* the secrets' values: not kept through the boot */
  if (!helpers_up)
    return FALSE;
  if (!hutch_instance_set_meta(instance->domain, "ssh-port", port_text, error)) {
    hutch_instance_stop_helpers(instance->meta->runtime_dir);
    return FALSE;
  }
  instance->meta->ssh_port = ssh_port;
  if (qemu_runtime && !system_grant_sockets(instance, profile, qemu_runtime, error)) {
    hutch_instance_stop_helpers(instance->meta->runtime_dir);
    return FALSE;
  }

  hutch_progress_begin(ctx, "boot", "starting the domain");
  gboolean created = virDomainCreate(instance->domain) >= 0;
  if (!created)
    hutch_set_libvirt_error(error, "starting the domain");
  if (system_seed) {
    /* QEMU holds the seed open now; its copy, which libvirt gave QEMU's user (every VM's)
     * for good, must not stay where any QEMU could open it by name */
    g_unlink(system_seed);
  }
  if (!created) {
    hutch_instance_stop_helpers(instance->meta->runtime_dir);
    return FALSE;
  }
  if (!wait_ready) {
    hutch_progress_end(ctx, "boot", "domain running (not waiting for the guest)");
    return TRUE;
  }
  g_autofree char *guest_warnings = NULL;
  gboolean sshd_failed = FALSE;
  if (!wait_ready_channel(ctx, instance, profile->boot_timeout, &guest_warnings, &sshd_failed,
                          error))
    return FALSE;

  hutch_progress_begin(ctx, "ready", "SSH with the pinned host key");
  g_autoptr(HutchSsh) ssh =
      connect_instance(instance, sshd_failed ? SSHD_FAILED_WAIT_S : 60, error);
  if (!ssh) {
    if (sshd_failed)
      g_prefix_error(error,
                     "the guest's sshd failed at this boot (SSH given %d s): ", SSHD_FAILED_WAIT_S);
    explain_unreachable(instance, guest_warnings, error);
    return FALSE;
  }
  g_autofree char *stamp =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  if (!g_file_test(stamp, G_FILE_TEST_EXISTS)) {
    /* First boot: READY is the provisioning runner's last word, but cloud-init's final stage
     * is still closing; wait for it so that `start` returns a settled guest. (Once: each
     * cloud-init command loads its Python, seconds under TCG.) */
    int status =
        hutch_ssh_exec_capture(ssh, "cloud-init status --wait >/dev/null", NULL, NULL, NULL, error);
    if (status < 0)
      return FALSE;
    if (!hutch_write_file(stamp, "", 0, 0600, error))
      return FALSE;
  }
  /* connected with the pinned key: a VM on a template has taken its own identity */
  g_autofree char *identity_pending =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_IDENTITY_PENDING, NULL);
  g_unlink(identity_pending);
  g_autoptr(GPtrArray) share_plan = hutch_instance_plan_shares(profile, instance->meta->runtime_dir,
                                                               instance->meta->guest_user, error);
  if (!share_plan || !apply_clone_identity(ctx, instance, &ssh, error) ||
      !apply_guest_mounts(ctx, instance, ssh, share_plan, error))
    return FALSE;
  hutch_progress_end(ctx, "ready", "SSH with the pinned host key");
  return TRUE;
}

/* A running domain whose first boot has not been seen to its end by any hutch (the start
 * that booted it was killed, or virsh started it): its provisioning may still be running, and
 * the ready channel cannot tell (the guest stops reporting once a report found nobody
 * listening). Asks the guest over SSH instead: the runner's status file appears when
 * provisioning ends ("ok" or "failed"). The answer is the guest's own business, so a hostile
 * guest gains nothing by lying; it is bounded and sanitised like everything it sends. */
static gboolean wait_provisioned(HutchContext *ctx, HutchInstance *instance, HutchSsh *ssh,
                                 GError **error) {
  g_autofree char *stamp =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  if (g_file_test(stamp, G_FILE_TEST_EXISTS))
    return TRUE;
  g_autoptr(HutchProfile) profile = instance_profile(instance, error);
  if (!profile)
    return FALSE;
  hutch_progress_begin(ctx, "provision", "waiting for the first boot's provisioning (the start "
                                         "that booted %s did not see it end)",
                       instance->name);
  g_autofree char *command = g_strdup_printf(
      "i=0; while [ ! -s /var/lib/hutch/status ] && [ $i -lt %u ]; do sleep 2; i=$((i+2)); "
      "done; cloud-init status --wait >/dev/null 2>&1; cat /var/lib/hutch/status 2>/dev/null; "
      "cat /var/lib/hutch/optional-failed 2>/dev/null",
      profile->boot_timeout);
  g_autofree char *out = NULL;
  int status = hutch_ssh_exec_capture(ssh, command, NULL, &out, NULL, error);
  if (status < 0)
    return FALSE;
  g_autofree char *clean = hutch_text_sanitize(out ? out : "", -1, HUTCH_TEXT_LINES);
  g_auto(GStrv) lines = g_strsplit(clean, "\n", 0);
  const char *result = lines[0] ? lines[0] : "";
  if (strcmp(result, "ok") != 0) {
    if (*result == '\0')
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_TIMEOUT,
                  "'%s' did not finish provisioning within %u s (boot_timeout); see hutch logs %s",
                  instance->name, profile->boot_timeout, instance->name);
    else
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROVISION,
                  "provisioning '%s' failed; the steps' output: hutch shell %s -- sudo cat "
                  "/var/log/hutch/steps/*.log",
                  instance->name, instance->name);
    return FALSE;
  }
  GString *failed = g_string_new("");
  for (guint i = 1; lines[i] && i <= 64; i++)
    if (*lines[i])
      g_string_append_printf(failed, "%s%s", failed->len ? ", " : "", lines[i]);
  hutch_text_truncate(failed->str, 512);
  if (failed->str[0])
    hutch_progress_note(ctx, "ready, with optional steps failed: %s (their output: hutch shell "
                             "%s -- sudo cat /var/log/hutch/steps/*.log)",
                        failed->str, instance->name);
  g_string_free(failed, TRUE);
  if (!hutch_write_file(stamp, "", 0, 0600, error))
    return FALSE;
  hutch_progress_end(ctx, "provision", "the first boot's provisioning ended");
  return TRUE;
}

gboolean hutch_instance_start(HutchContext *ctx, const char *name, gboolean wait_ready,
                              GError **error) {
  double started = hutch_now();
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  if (hutch_instance_is_active(instance)) {
    if (!wait_ready)
      return TRUE;
    /* Started by someone else (virsh, another hutch, a start that was killed): ready once SSH
     * answers and the first boot's provisioning has ended. */
    g_autoptr(HutchSsh) ssh = connect_instance(instance, 600, error);
    if (!ssh || !wait_provisioned(ctx, instance, ssh, error)) {
      g_prefix_error(error, "starting '%s': ", name);
      return FALSE;
    }
    hutch_supervisor_spawn(ctx, name, instance->meta->runtime_dir);
    hutch_progress_note(ctx, "%s is running: hutch shell %s", name, name);
    return TRUE;
  }
  /* this run's supervisor, when it started the helpers, waits for this end of its boot
   * socket to close: then it serves the VM if the domain runs, and stops the helpers if not
   * (a start that failed before the domain, or was killed) */
  g_auto(HutchFd) boot_fd = -1;
  if (!start_steps(ctx, instance, wait_ready, &boot_fd, error)) {
    g_prefix_error(error, "starting '%s': ", name);
    return FALSE;
  }
  hutch_ssh_config_refresh(ctx);
  if (wait_ready && boot_fd < 0)
    hutch_supervisor_spawn(ctx, name, instance->meta->runtime_dir);
  hutch_progress_note(ctx, "%s in %.1f s: hutch shell %s",
                      wait_ready ? "ready" : "started", hutch_now() - started, name);
  return TRUE;
}

/* ---- stop, delete --------------------------------------------------------------------- */

#define STOP_TIMEOUT_S 60

static gboolean stop_domain(HutchContext *ctx, HutchInstance *instance, gboolean force,
                            GError **error) {
  if (!hutch_instance_is_active(instance))
    return TRUE;
  if (!force) {
    hutch_progress_begin(ctx, "stop", "asking the guest to power off");
    if (virDomainShutdown(instance->domain) == 0) {
      double deadline = hutch_now() + STOP_TIMEOUT_S;
      while (hutch_instance_is_active(instance) && hutch_now() < deadline)
        g_usleep(250 * 1000);
    }
    if (!hutch_instance_is_active(instance)) {
      hutch_progress_end(ctx, "stop", "guest powered off");
      return TRUE;
    }
    hutch_progress_note(ctx, "the guest did not power off within %d s: forcing it",
                        STOP_TIMEOUT_S);
  }
  if (virDomainDestroy(instance->domain) < 0 && hutch_instance_is_active(instance)) {
    hutch_set_libvirt_error(error, "powering off '%s'", instance->name);
    return FALSE;
  }
  return TRUE;
}

gboolean hutch_instance_stop(HutchContext *ctx, const char *name, gboolean force,
                             GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  if (!stop_domain(ctx, instance, force, error))
    return FALSE;
  /* the supervisor sees the stop and ends at once; when stop returns, its forwarded ports are
   * closed too */
  hutch_supervisor_wait_gone(instance->meta->runtime_dir, 5000);
  hutch_instance_stop_helpers(instance->meta->runtime_dir);
  hutch_ssh_config_refresh(ctx);
  /* the VM is stopped whatever this says: a failure is a note (the next start takes them
   * back too, and fails if it cannot) */
  g_autoptr(GError) reclaim_error = NULL;
  if (!hutch_instance_system_reclaim(ctx, instance->domain, instance->name, &reclaim_error))
    hutch_progress_note(ctx, "taking %s's files back from QEMU's user failed: %s", name,
                        reclaim_error->message);
  return TRUE;
}

gboolean hutch_instance_restart(HutchContext *ctx, const char *name, gboolean wait_ready,
                                GError **error) {
  /* refused before the stop, not after it */
  return hutch_context_check_may_run_vms(ctx, error) &&
         hutch_instance_stop(ctx, name, FALSE, error) &&
         hutch_instance_start(ctx, name, wait_ready, error);
}

gboolean hutch_instance_wait_stopped(HutchContext *ctx, const char *name, guint timeout_ms,
                                     gboolean *ret_stopped, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  double deadline = hutch_now() + timeout_ms / 1000.0;
  gboolean stopped;
  while (!(stopped = !hutch_instance_is_active(instance)) && hutch_now() < deadline)
    g_usleep(250 * 1000);
  *ret_stopped = stopped;
  return TRUE;
}

gboolean hutch_instance_delete(HutchContext *ctx, const char *name, gboolean force,
                               GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  if (hutch_instance_is_active(instance)) {
    if (!force) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                  "'%s' is running: stop it first, or delete --force", name);
      return FALSE;
    }
    if (!stop_domain(ctx, instance, TRUE, error))
      return FALSE;
  }
  hutch_supervisor_wait_gone(instance->meta->runtime_dir, 5000);
  hutch_instance_stop_helpers(instance->meta->runtime_dir);
  /* qemu:///system: the pool's directory before anything goes, so that a failure leaves the
   * VM whole */
  g_autofree char *system_dir = NULL;
  if (hutch_context_is_system(ctx) &&
      !(system_dir = hutch_system_dir(virDomainGetConnect(instance->domain), error)))
    return FALSE;
  if (virDomainUndefineFlags(instance->domain, VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                                   VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
    hutch_set_libvirt_error(error, "removing domain '%s'", name);
    return FALSE;
  }
  if (system_dir) {
    /* its disk, kernel and sockets in the user's directory of the daemon, first: the
     * instance directory is what shows the VM is still there to delete again */
    g_autofree char *vm_dir = hutch_system_vm_dir(system_dir, name);
    g_autofree char *run_dir = hutch_system_run_dir(system_dir, name);
    if (!hutch_rmtree(vm_dir, error))
      return FALSE;
    hutch_rmtree(run_dir, NULL);
  }
  /* The directories come from the metadata, but only ever below hutch's own roots. */
  g_autofree char *expected_dir = hutch_instance_dir(name);
  g_autofree char *expected_runtime = hutch_instance_runtime_dir(name);
  if (g_strcmp0(instance->meta->instance_dir, expected_dir) == 0 &&
      !hutch_rmtree(expected_dir, error))
    return FALSE;
  if (g_strcmp0(instance->meta->runtime_dir, expected_runtime) == 0)
    hutch_rmtree(expected_runtime, NULL); /* on qemu:///system, the link */
  hutch_ssh_config_refresh(ctx);
  hutch_progress_note(ctx, "deleted %s", name);
  return TRUE;
}

/* ---- list, info ----------------------------------------------------------------------- */

static const char *state_name(int state) {
  switch (state) {
  case VIR_DOMAIN_RUNNING:
    return "running";
  case VIR_DOMAIN_BLOCKED:
    return "blocked";
  case VIR_DOMAIN_PAUSED:
    return "paused";
  case VIR_DOMAIN_SHUTDOWN:
    return "stopping";
  case VIR_DOMAIN_SHUTOFF:
    return "stopped";
  case VIR_DOMAIN_CRASHED:
    return "crashed";
  case VIR_DOMAIN_PMSUSPENDED:
    return "suspended";
  case VIR_DOMAIN_NOSTATE:
  default:
    return "unknown";
  }
}

/* What `info` reads of the optional-failed file: HUTCH_READY_FAILED_MAX lines of the longest
 * an older hutch kept (a ready-channel line). */
#define OPTIONAL_FAILED_READ_MAX (HUTCH_READY_FAILED_MAX * (HUTCH_READY_LINE_MAX + 1))

/* "shares", "ports" and "network" of the info object, from the frozen profile (the one every
 * start uses); left out when it cannot be read. */
static void describe_profile(JsonObject *o, HutchInstance *instance) {
  g_autofree char *path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_autoptr(HutchProfile) profile = hutch_profile_load_file(path, NULL);
  if (!profile)
    return;
  g_autofree char *guest_home = g_build_filename("/home", instance->meta->guest_user, NULL);
  JsonArray *shares = json_array_new();
  for (guint i = 0; i < profile->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(profile->shares, i);
    g_autofree char *host = hutch_expand_tilde(share->host, g_get_home_dir());
    g_autofree char *guest = hutch_expand_tilde(share->guest, guest_home);
    JsonObject *entry = json_object_new();
    json_object_set_string_member(entry, "host", host);
    json_object_set_string_member(entry, "guest", guest);
    json_object_set_boolean_member(entry, "writable", share->writable);
    json_object_set_string_member(entry, "cache", hutch_share_cache_name(share->cache));
    json_array_add_object_element(shares, entry);
  }
  json_object_set_array_member(o, "shares", shares);
  JsonArray *ports = json_array_new();
  for (guint i = 0; i < profile->ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(profile->ports, i);
    JsonObject *entry = json_object_new();
    json_object_set_string_member(entry, "host_ip", port->host_ip);
    json_object_set_int_member(entry, "host_start", port->host_start);
    json_object_set_int_member(entry, "host_end", port->host_end);
    json_object_set_int_member(entry, "guest_start", port->guest_start);
    json_object_set_int_member(entry, "guest_end", port->guest_end);
    json_object_set_string_member(entry, "proto", hutch_proto_to_string(port->proto));
    json_array_add_object_element(ports, entry);
  }
  json_object_set_array_member(o, "ports", ports);
  /* the policy in force: the instance's file (hutch net changes it), else the profile's */
  g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_load(instance->meta->instance_dir, NULL);
  if (!policy)
    policy = hutch_profile_egress_policy(profile, NULL);
  if (!policy)
    return;
  JsonObject *network = json_object_new();
  json_object_set_string_member(network, "egress", hutch_egress_mode_to_string(policy->mode));
  json_object_set_array_member(network, "allow", hutch_egress_rules_to_json(policy->allow));
  json_object_set_array_member(network, "deny", hutch_egress_rules_to_json(policy->deny));
  guint64 allowed = 0, denied = 0;
  if (hutch_egress_counts(instance->meta->runtime_dir, &allowed, &denied)) {
    json_object_set_int_member(network, "allowed", (gint64)allowed);
    json_object_set_int_member(network, "denied", (gint64)denied);
  }
  json_object_set_object_member(o, "network", network);
  /* the secrets' names, sources, hosts and placeholders: never a value (hutch has none) */
  JsonArray *secrets = hutch_broker_describe(instance->meta->instance_dir);
  if (secrets)
    json_object_set_array_member(o, "secrets", secrets);
}

/* The documented info object (docs/json.md). */
static JsonObject *describe(HutchContext *ctx, HutchInstance *instance) {
  JsonObject *o = json_object_new();
  /* One round trip to libvirtd per domain beyond the metadata: `hutch list` with many VMs
   * should cost about what `virsh list` does. */
  virDomainInfo info = {.state = VIR_DOMAIN_NOSTATE};
  virDomainGetInfo(instance->domain, &info);
  char uuid[VIR_UUID_STRING_BUFLEN] = "";
  virDomainGetUUIDString(instance->domain, uuid);
  int state = info.state;
  g_autofree char *memory = hutch_format_size((guint64)info.maxMem * 1024);
  gboolean tcg = hutch_instance_is_tcg(instance);

  json_object_set_string_member(o, "name", instance->name);
  json_object_set_string_member(o, "state", state_name(state));
  json_object_set_string_member(o, "profile", instance->meta->profile_name);
  json_object_set_string_member(o, "uuid", uuid);
  json_object_set_string_member(o, "accel", tcg ? "tcg" : "kvm");
  json_object_set_int_member(o, "cpus", info.nrVirtCpu);
  json_object_set_string_member(o, "memory", memory);
  json_object_set_string_member(o, "user", instance->meta->guest_user);
  if (state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED ||
      state == VIR_DOMAIN_BLOCKED) {
    json_object_set_int_member(o, "ssh_port", instance->meta->ssh_port);
    /* the supervisor's own answer: one that does not answer is not there */
    g_autoptr(JsonObject) supervisor = hutch_supervisor_status(instance->meta->runtime_dir);
    if (supervisor) {
      json_object_set_int_member(o, "supervisor_pid",
                                 json_object_get_int_member_with_default(supervisor, "pid", 0));
      json_object_set_int_member(
          o, "supervisor_commands",
          json_object_get_int_member_with_default(supervisor, "commands", 0));
      json_object_set_int_member(o, "supervisor_copies",
                                 json_object_get_int_member_with_default(supervisor, "copies", 0));
      /* the helpers that ended while it watched them (its children: passt, the egress
       * helper, a share's virtiofsd), most recent last */
      JsonArray *ended = json_array_new();
      JsonNode *ended_node = json_object_get_member(supervisor, "ended");
      if (ended_node && JSON_NODE_HOLDS_ARRAY(ended_node)) {
        JsonArray *from = json_node_get_array(ended_node);
        for (guint i = 0; i < json_array_get_length(from) && i < 16; i++) {
          JsonNode *e = json_array_get_element(from, i);
          if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
            json_array_add_string_element(ended, json_node_get_string(e));
        }
      }
      json_object_set_array_member(o, "helpers_ended", ended);
    }
  }
  json_object_set_string_member(o, "uri", hutch_context_get_uri(ctx));
  json_object_set_string_member(o, "instance_dir", instance->meta->instance_dir);
  g_autofree char *stamp =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  json_object_set_boolean_member(o, "provisioned", g_file_test(stamp, G_FILE_TEST_EXISTS));
  /* a clone names its source */
  g_autofree char *origin_path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_ORIGIN, NULL);
  gsize origin_len = 0;
  g_autofree char *origin = hutch_read_file_part(origin_path, 128, FALSE, &origin_len, NULL);
  if (origin && hutch_name_is_valid(g_strstrip(origin), NULL))
    json_object_set_string_member(o, "cloned_from", origin);
  else if (origin && g_str_has_prefix(origin, "template ") &&
           hutch_name_is_valid(origin + strlen("template "), NULL))
    json_object_set_string_member(o, "template", origin + strlen("template "));
  /* optional provisioning steps that failed, as the guest reported them at first boot */
  JsonArray *failed = json_array_new();
  g_autofree char *failed_path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_OPTIONAL_FAILED, NULL);
  gsize failed_len = 0;
  guint failed_more = 0;
  /* The file may come from an older hutch that kept whatever the guest sent: read a bounded
   * part, sanitised and cut again. */
  g_autofree char *failed_text =
      hutch_read_file_part(failed_path, OPTIONAL_FAILED_READ_MAX, FALSE, &failed_len, NULL);
  g_autoptr(GPtrArray) steps =
      failed_text ? hutch_failed_steps_from_text(failed_text, failed_len, &failed_more) : NULL;
  for (guint i = 0; steps && i < steps->len; i++) {
    const HutchFailedStep *step = steps->pdata[i];
    JsonObject *entry = json_object_new();
    json_object_set_int_member(entry, "index", g_ascii_strtoll(step->index, NULL, 10));
    json_object_set_string_member(entry, "name", step->name);
    json_object_set_int_member(entry, "status", g_ascii_strtoll(step->status, NULL, 10));
    json_object_set_string_member(entry, "reason", step->reason);
    json_array_add_object_element(failed, entry);
  }
  json_object_set_array_member(o, "optional_failed", failed);
  if (failed_more > 0)
    json_object_set_int_member(o, "optional_failed_more", failed_more);
  describe_profile(o, instance);
  json_object_set_array_member(o, "forwards", hutch_forward_list_dir(instance->meta->runtime_dir));
  return o;
}

JsonObject *hutch_instance_info(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  return describe(ctx, instance);
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *hutch_instance_missing(HutchContext *ctx, const char *instances_dir, GError **error) {
  virConnectPtr conn = hutch_context_connect(ctx, error);
  if (!conn)
    return NULL;
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) dir = g_dir_open(instances_dir, 0, NULL);
  const char *entry;
  while (dir && (entry = g_dir_read_name(dir))) {
    g_autofree char *path = g_build_filename(instances_dir, entry, NULL);
    /* the other daemon's VMs are not missing here */
    if (!hutch_name_is_valid(entry, NULL) || !is_instance_dir(path) ||
        hutch_instance_dir_is_system(path) != hutch_context_is_system(ctx))
      continue;
    g_autoptr(virDomain) domain = virDomainLookupByName(conn, entry);
    virErrorPtr last = domain ? NULL : virGetLastError();
    if (last && last->code == VIR_ERR_NO_DOMAIN)
      g_ptr_array_add(names, g_strdup(entry));
  }
  g_ptr_array_sort(names, compare_strings);
  return g_steal_pointer(&names);
}

/* The list entry of an instance directory without its domain (docs/json.md). */
static JsonObject *describe_missing(HutchContext *ctx, const char *name) {
  g_autofree char *dir = hutch_instance_dir(name);
  g_autofree char *stamp = g_build_filename(dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "name", name);
  json_object_set_string_member(o, "state", "missing");
  json_object_set_string_member(o, "uri", hutch_context_get_uri(ctx));
  json_object_set_string_member(o, "instance_dir", dir);
  json_object_set_boolean_member(o, "provisioned", g_file_test(stamp, G_FILE_TEST_EXISTS));
  return o;
}

static gint compare_described(gconstpointer a, gconstpointer b) {
  return g_strcmp0(json_object_get_string_member(*(JsonObject **)a, "name"),
                   json_object_get_string_member(*(JsonObject **)b, "name"));
}

JsonArray *hutch_instance_list(HutchContext *ctx, GError **error) {
  virConnectPtr conn = hutch_context_connect(ctx, error);
  if (!conn)
    return NULL;
  virDomainPtr *domains = NULL;
  int n = virConnectListAllDomains(conn, &domains, 0);
  if (n < 0) {
    hutch_set_libvirt_error(error, "listing domains");
    return NULL;
  }
  g_autoptr(GPtrArray) described =
      g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  for (int i = 0; i < n; i++) {
    g_autoptr(HutchInstance) instance = g_new0(HutchInstance, 1);
    instance->domain = domains[i];
    instance->name = g_strdup(virDomainGetName(domains[i]));
    /* domains without hutch metadata are not hutch's: leave them out */
    instance->meta = read_meta(domains[i], NULL);
    if (instance->meta && is_own_instance(ctx, instance))
      g_ptr_array_add(described, describe(ctx, instance));
  }
  free(domains);
  g_autofree char *data = hutch_data_dir();
  g_autofree char *instances = g_build_filename(data, "instances", NULL);
  g_autoptr(GPtrArray) missing = hutch_instance_missing(ctx, instances, NULL);
  for (guint i = 0; missing && i < missing->len; i++)
    g_ptr_array_add(described, describe_missing(ctx, g_ptr_array_index(missing, i)));
  g_ptr_array_sort(described, compare_described);
  JsonArray *list = json_array_new();
  for (guint i = 0; i < described->len; i++)
    json_array_add_object_element(list, json_object_ref(g_ptr_array_index(described, i)));
  return list;
}
