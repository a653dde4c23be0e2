/* domain-private.h: profile + instance -> libvirt domain XML. Pure: no I/O. */
#pragma once

#include "profile-private.h"

#define HUTCH_METADATA_NS "https://hutch.dev/xmlns/instance/1"
#define HUTCH_METADATA_PREFIX "hutch"
/* Name of the virtio-serial port the guest writes READY to. */
#define HUTCH_READY_CHANNEL "org.hutch.ready.0"

/* A virtiofs share: read-only ones are virtiofsd's to enforce (libvirt refuses <readonly/> on
 * virtiofs), so the domain has no such flag. */
typedef struct {
  char *tag;    /* mount tag the guest uses */
  char *socket; /* vhost-user socket of the virtiofsd hutch runs */
} HutchDomainFs;

/* Everything the domain XML depends on besides the profile. Paths are absolute. */
typedef struct {
  const char *name;
  const char *uuid;            /* canonical 36-character form */
  const char *domain_type;     /* "kvm" or "qemu" (TCG); decided by the caller */
  guint cpus;                  /* vCPUs (hutch_domain_vcpus); 0: the profile's cpus */
  /* TCG: libvirt's default CPU model (QEMU's qemu64) instead of the maximum one; only the
   * boot benchmark's baseline asks for it (HUTCH_TCG_CPU=qemu64). */
  gboolean tcg_qemu64;
  const char *emulator;        /* NULL: libvirt's default */
  const char *disk_path;       /* the instance's qcow2 overlay */
  const char *seed_path;       /* the cidata ISO, or NULL */
  const char *kernel;          /* direct kernel boot when non-NULL */
  const char *initrd;          /* may be NULL */
  const char *cmdline;         /* may be NULL */
  const char *console_log;     /* serial console is logged here; NULL: a pty (qemu:///system) */
  const char *passt_socket;    /* NULL: no network */
  gboolean net_vhost_user;     /* passt serves the NIC's virtqueues (vhost-user), not a stream */
  /* qemu:///system, where QEMU runs as libvirt's own user: the NIC is libvirt's own
   * <interface type='vhostuser'> (which libvirt hands QEMU however it runs it), not
   * <qemu:commandline> arguments, and needs net_vhost_user; the console log and the ready
   * socket may be NULL (libvirt's own, read through the API) */
  gboolean system;
  const char *mac;             /* "52:54:00:xx:xx:xx" */
  /* unix socket of the ready channel (libvirt binds it); NULL: one in libvirt's own
   * directory, read through virDomainOpenChannel (qemu:///system) */
  const char *ready_socket;
  const char *agent_socket;    /* unix socket of the qemu-guest-agent channel, or NULL */
  GPtrArray *filesystems;      /* HutchDomainFs*, may be NULL */
  /* metadata, read back by later hutch processes */
  const char *profile_name;
  guint ssh_port;
  const char *instance_dir;
  const char *runtime_dir;
  const char *guest_user;
} HutchDomainConfig;

/* The vCPUs a domain gets when the profile asks for `wanted`. Under TCG (tcg) at most
 * `limit`, or when limit is 0 max(1, host_cores / 2): each TCG vCPU is a host thread that
 * runs flat out, and QEMU's I/O thread, passt, virtiofsd and hutch need a core too. Two vCPUs
 * on a 2-core host wedged the guest with RCU stalls; one was fine. Under KVM `wanted`. When
 * the count is capped, *ret_notice (if given) gets a one-line notice saying so and how to
 * keep the profile's count. */
guint hutch_domain_vcpus(guint wanted, gboolean tcg, guint host_cores, guint limit,
                         char **ret_notice);

/* The domain XML for config and profile (cpus, memory). Returns NULL with a HUTCH_ERROR_USAGE
 * error on invalid input (bad name or uuid, relative paths, control characters, a virtiofs
 * entry marked readonly: virtiofsd enforces that, not the domain). */
char *hutch_domain_build_xml(const HutchProfile *profile, const HutchDomainConfig *config,
                             GError **error);

/* `hutch edit`: the domain XML xml (as libvirt gives it back, inactive) with vcpus vCPUs
 * (hutch_domain_vcpus of the profile's), the memory of profile and the shared folders
 * filesystems (replacing all it had, and with shareable memory exactly when one is
 * virtiofs); everything else is kept. Pure.
 * HUTCH_ERROR_USAGE for invalid filesystems or memory, HUTCH_ERROR_FAILED for XML that is
 * not a domain. */
/* The domain XML with its network back end set to passt's vhost-user mode (vhost_user) or
 * a stream socket, and its memory shareable as the back ends need; *ret_changed says whether
 * anything changed (a domain without hutch's network is left alone). */
char *hutch_domain_set_net_backend(const char *xml, const char *passt_socket, gboolean vhost_user,
                                   gboolean *ret_changed, GError **error);
char *hutch_domain_edit_xml(const char *xml, const HutchProfile *profile, guint vcpus,
                            GPtrArray *filesystems, GError **error);

/* Metadata read back from a domain's <hutch:instance> element. */
typedef struct {
  char *profile_name;
  guint ssh_port;
  char *instance_dir;
  char *runtime_dir;
  char *guest_user;
  char *accel; /* "kvm" or "tcg"; NULL for domains defined before hutch recorded it */
  /* <provisioned>yes|no: whether the first boot had finished when a snapshot was taken (the
   * snapshot keeps this definition, and a revert brings it back); -1 when not recorded */
  int provisioned;
} HutchDomainMeta;

/* Parses the <hutch:instance> element's XML (as virDomainGetMetadata returns it, with or
 * without the namespace). Anything else, or a missing ssh-port/instance-dir/runtime-dir,
 * is a HUTCH_ERROR_NOT_HUTCH error. */
HutchDomainMeta *hutch_domain_meta_parse(const char *xml, GError **error);
void hutch_domain_meta_free(HutchDomainMeta *meta);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchDomainMeta, hutch_domain_meta_free)
void hutch_domain_fs_free(HutchDomainFs *fs);
