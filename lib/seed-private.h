/* seed-private.h: profile + instance -> cloud-init NoCloud documents and the cidata ISO. */
#pragma once

#include "profile-private.h"

typedef struct {
  const char *tag;        /* virtiofs mount tag */
  const char *guest_path; /* absolute, "~" already expanded to the guest user's home */
  gboolean readonly;      /* mounted ro: a courtesy, the host enforces it */
} HutchSeedMount;

typedef struct {
  const char *instance_id; /* stable: the domain UUID, so provisioning runs once */
  const char *hostname;
  const char *user_name;
  guint user_uid;
  guint user_gid;               /* the user's own group, named like the user */
  const char *authorized_key;   /* the user's hutch public key, "ssh-ed25519 AAAA... c" */
  const char *host_key_private; /* the guest's ed25519 host key, OpenSSH private key text */
  const char *host_key_public;  /* "ssh-ed25519 AAAA..." */
  GPtrArray *mounts;            /* HutchSeedMount*, may be NULL */
  const char *ready_channel;    /* virtio-serial port name the guest reports to */
  /* The NIC's MAC "52:54:00:xx:xx:xx", or NULL. With it, network-config matches the NIC by
   * MAC and names it eth0, which every cloud-init renderer (eni, netplan, networkd) honours;
   * without it, the match is by driver, which only netplan honours (the others then need the
   * kernel to call the NIC eth0: net.ifnames=0). */
  const char *mac_address;
  /* The credential broker (broker.c): the VM's CA certificate (PEM) for the guest's trust
   * stores, and the guest's variables holding the secrets' placeholders ("NAME=VALUE");
   * both NULL without secrets. */
  const char *broker_ca;
  char **broker_env;
} HutchSeedConfig;

typedef struct {
  char *meta_data;
  char *user_data; /* begins with "#cloud-config\n" */
  char *network_config;
  /* Not cloud-init's: read by `hutch-provision identity` at the first boot of a VM made from
   * a template (cloud-init is disabled in its disk): "hostname NAME\nauthorized-key KEY\n",
   * and the guest's host key (OpenSSH private key text). */
  char *identity;
  char *host_key;
} HutchSeedDocuments;

void hutch_seed_documents_free(HutchSeedDocuments *docs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSeedDocuments, hutch_seed_documents_free)

HutchSeedDocuments *hutch_seed_build(const HutchProfile *profile, const HutchSeedConfig *config,
                                     GError **error);
/* Provisioning protocol: the guest writes lines to /dev/virtio-ports/<ready_channel>:
 *   STEP i/n NAME          step i of n starts (also sent for steps skipped as done before)
 *   OK i NAME              step i succeeded
 *   FAIL i NAME STATUS     step i failed with exit STATUS; an optional step's failure is
 *                          followed by the next STEP, a required one's by FAILED
 *   WARN TEXT              something non-fatal (a share that did not mount)
 *   READY / FAILED         the end of provisioning; on later boots hutch-ready.service sends
 *                          one of them again once sshd is up (FAILED if provisioning failed)
 * Unknown lines are to be ignored. In the guest: /var/lib/hutch/optional-failed lists the
 * optional steps that failed, /var/log/hutch/steps/NN-NAME.log holds each step's output, and
 * `sudo /usr/local/lib/hutch/hutch-provision run` runs the steps not yet done again. */

/* Where the seed installs the provisioning runner in the guest. */
#define HUTCH_SEED_GUEST_RUNNER "/usr/local/lib/hutch/hutch-provision"

/* A file of hutch's data directory (cloud-init/NAME): from $HUTCH_SOURCE_DIR (tests), the
 * installed data directory, or the source tree hutch was built from. */
char *hutch_seed_read_data_file(const char *name, GError **error);

/* The guest's share table (/etc/hutch/fstab): one fstab line a mount, "" for none. The seed
 * holds it for the first boot; `hutch-provision mounts` takes it on stdin later (after
 * `hutch edit` changed the shares). */
char *hutch_seed_mount_table(GPtrArray *mounts);

/* Writes an ISO 9660 volume "cidata" (Rock Ridge + Joliet) holding the three documents,
 * and the identity files as hutch-identity and hutch-host-key. */
gboolean hutch_seed_write_iso(const HutchSeedDocuments *docs, const char *path, GError **error);
