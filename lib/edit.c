/* edit.c: `hutch edit`: cpus, memory, disk, shares and ports of a stopped VM, validated like
 * create before anything changes. */
#include "config.h"

#include <errno.h>
#include <glib/gstdio.h>

#include "edit-private.h"
#include "image-private.h"
#include "instance-private.h"
#include "share-private.h"

gboolean hutch_edit_apply(HutchProfile *profile, const HutchEdit *edit, const char *guest_home,
                          GError **error) {
  for (guint i = 0; edit->remove_shares && edit->remove_shares[i]; i++)
    if (!hutch_profile_remove_share(profile, edit->remove_shares[i], guest_home, error))
      return FALSE;
  if (edit->no_ports)
    hutch_profile_clear_ports(profile);
  for (guint i = 0; edit->remove_ports && edit->remove_ports[i]; i++)
    if (!hutch_profile_remove_port(profile, edit->remove_ports[i], error))
      return FALSE;
  if (edit->cpus && !hutch_profile_set_cpus(profile, edit->cpus, error))
    return FALSE;
  if (edit->memory && !hutch_profile_set_memory(profile, edit->memory, error))
    return FALSE;
  if (edit->disk && !hutch_profile_set_disk(profile, edit->disk, error))
    return FALSE;
  for (guint i = 0; edit->add_shares && edit->add_shares[i]; i++)
    if (!hutch_profile_add_share_spec(profile, edit->add_shares[i], error))
      return FALSE;
  for (guint i = 0; edit->add_ports && edit->add_ports[i]; i++)
    if (!hutch_profile_add_port_spec(profile, edit->add_ports[i], error))
      return FALSE;
  return TRUE;
}

/* The ports of `edited` that `old` did not forward (the same host range, protocol and
 * address), pointing into edited. */
static GPtrArray *new_ports(const HutchProfile *old, const HutchProfile *edited) {
  GPtrArray *ports = g_ptr_array_new();
  for (guint i = 0; i < edited->ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(edited->ports, i);
    gboolean known = FALSE;
    for (guint j = 0; !known && j < old->ports->len; j++) {
      const HutchPort *had = g_ptr_array_index(old->ports, j);
      known = had->proto == port->proto && had->host_start == port->host_start &&
              had->host_end == port->host_end && g_strcmp0(had->host_ip, port->host_ip) == 0;
    }
    if (!known)
      g_ptr_array_add(ports, (gpointer)port);
  }
  return ports;
}

static gboolean redefine(virDomainPtr domain, const char *xml, GError **error) {
  g_autoptr(virDomain) defined = virDomainDefineXML(virDomainGetConnect(domain), xml);
  if (!defined) {
    hutch_set_libvirt_error(error, "redefining the domain");
    return FALSE;
  }
  return TRUE;
}

static gboolean edit_steps(HutchContext *ctx, HutchInstance *instance, const HutchEdit *edit,
                           GError **error) {
  const char *name = instance->name;
  const char *dir = instance->meta->instance_dir;
  g_autofree char *profile_path = g_build_filename(dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_autoptr(HutchProfile) old = hutch_profile_load_file(profile_path, error);
  g_autoptr(HutchProfile) edited = old ? hutch_profile_load_file(profile_path, error) : NULL;
  if (!edited)
    return FALSE;
  g_autofree char *guest_home = g_build_filename("/home", instance->meta->guest_user, NULL);
  if (!hutch_edit_apply(edited, edit, guest_home, error))
    return FALSE;

  /* Everything is checked before anything changes. */
  g_autofree char *overlay = g_build_filename(dir, HUTCH_INSTANCE_DISK, NULL);
  guint64 disk_now = 0;
  if (!hutch_image_overlay_size(overlay, &disk_now, error))
    return FALSE;
  if (edit->disk && edited->disk < disk_now) {
    g_autofree char *want = hutch_format_size(edited->disk);
    g_autofree char *have = hutch_format_size(disk_now);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "disk: %s is smaller than the disk's %s: a disk only grows (--disk %s or more)",
                want, have, have);
    return FALSE;
  }
  guint vcpus = 0;
  g_autofree char *vcpus_notice = NULL;
  if (!hutch_instance_plan_vcpus(edited, hutch_instance_is_tcg(instance), &vcpus, &vcpus_notice,
                                 error))
    return FALSE;
  g_autoptr(GPtrArray) added_ports = new_ports(old, edited);
  if (!hutch_instance_check_ports(ctx, name, added_ports, TRUE, error))
    return FALSE;
  g_autoptr(GPtrArray) share_plan = hutch_instance_plan_shares(edited, instance->meta->runtime_dir,
                                                               instance->meta->guest_user, error);
  if (!share_plan)
    return FALSE;
  /* the domain names each socket where QEMU reaches it */
  g_autofree char *qemu_runtime = hutch_instance_qemu_runtime_dir(ctx, instance, error);
  g_autoptr(GPtrArray) qemu_share_plan =
      !qemu_runtime ? NULL
      : strcmp(qemu_runtime, instance->meta->runtime_dir) == 0
          ? g_ptr_array_ref(share_plan)
          : hutch_instance_plan_shares(edited, qemu_runtime, instance->meta->guest_user, error);
  if (!qemu_share_plan)
    return FALSE;
  g_autoptr(GPtrArray) filesystems = hutch_share_plan_domain_fs(qemu_share_plan);
  g_autofree char *old_xml = virDomainGetXMLDesc(instance->domain, VIR_DOMAIN_XML_INACTIVE);
  if (!old_xml) {
    hutch_set_libvirt_error(error, "reading the domain");
    return FALSE;
  }
  g_autofree char *xml = hutch_domain_edit_xml(old_xml, edited, vcpus, filesystems, error);
  g_autofree char *yaml = xml ? hutch_profile_to_yaml(edited, error) : NULL;
  if (!yaml)
    return FALSE;
  /* The share record (what each share's host directory was at create, by index) is made
   * anew for the edited list: indexes move when a share goes. A share the VM had keeps what
   * was recorded for it (one the guest has redirected since is refused here as at a start),
   * and only an added share is recorded as it resolves today. It replaces the old one only
   * once the edit has gone through. */
  g_autofree char *record = g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_SHARES, NULL);
  g_autofree char *record_new = g_strconcat(record, ".new", NULL);
  g_unlink(record_new);
  if (!hutch_share_record_carry(record, old, record_new, edited, error) ||
      !hutch_share_check_record(share_plan, edited, record_new, error)) {
    g_unlink(record_new);
    return FALSE;
  }

  /* qemu:///system: the disk's header was QEMU's user's to write while the VM ran (every
   * VM's QEMU runs as that user); a backing or data file named there would be opened by the
   * resize, as this user: refused, as for any image */
  if (edit->disk && hutch_context_is_system(ctx) && !hutch_image_inspect(overlay, NULL, error))
    return FALSE;
  /* The domain first: it is the one change that can be undone exactly. */
  if (!redefine(instance->domain, xml, error))
    return FALSE;
  if ((edit->disk && !hutch_image_grow_overlay(overlay, edited->disk, error)) ||
      !hutch_write_file(profile_path, yaml, strlen(yaml), 0600, error)) {
    redefine(instance->domain, old_xml, NULL);
    g_unlink(record_new);
    return FALSE;
  }
  if (g_rename(record_new, record) < 0)
    hutch_progress_note(ctx, "could not replace %s: %s (the next start records the shares)",
                        record, g_strerror(errno));
  if (vcpus_notice && edit->cpus)
    hutch_progress_note(ctx, "%s", vcpus_notice);
  g_autofree char *memory = hutch_format_size(edited->memory);
  g_autofree char *disk = hutch_format_size(MAX(edited->disk, disk_now));
  hutch_progress_note(ctx, "%s: %u CPU%s, %s, %s disk, %u shared folder%s, %u port forward%s", name,
                      vcpus, vcpus == 1 ? "" : "s", memory, disk, edited->shares->len,
                      edited->shares->len == 1 ? "" : "s", edited->ports->len,
                      edited->ports->len == 1 ? "" : "s");
  /* The guest mounts the table it was given at its first boot (cloud-init is disabled after
   * provisioning) under tags hutchfs<index>, which move when a share goes: the next start
   * gives it the new table over SSH (hutch-provision mounts). */
  if ((edit->add_shares && edit->add_shares[0]) || (edit->remove_shares && edit->remove_shares[0])) {
    g_autofree char *pending = g_build_filename(dir, HUTCH_INSTANCE_MOUNTS_PENDING, NULL);
    if (!hutch_write_file(pending, "", 0, 0600, NULL))
      hutch_progress_note(ctx, "could not write %s: the guest keeps its old shares until they "
                               "are mounted by hand", pending);
    else
      hutch_progress_note(ctx, "the guest mounts the edited shares at the next start");
  }
  return TRUE;
}

gboolean hutch_instance_edit(HutchContext *ctx, const char *name, const HutchEdit *edit,
                             GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  if (hutch_instance_is_active(instance)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "%s is running: hutch stop %s first", name,
                name);
    return FALSE;
  }
  if (!edit_steps(ctx, instance, edit, error)) {
    g_prefix_error(error, "editing '%s': ", name);
    return FALSE;
  }
  return TRUE;
}
