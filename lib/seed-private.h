/* seed-private.h: profile + instance -> cloud-init NoCloud documents and the cidata ISO. */
#pragma once

#include "profile-private.h"

typedef struct {
  const char *tag;          /* virtiofs / 9p mount tag */
  const char *guest_path;   /* absolute, "~" already expanded to the guest user's home */
  const char *fstype;       /* "virtiofs" or "9p" */
  gboolean readonly;
} HutchSeedMount;

typedef struct {
  const char *instance_id;       /* stable: the domain UUID, so provisioning runs once */
  const char *hostname;
  const char *user_name;
  guint user_uid;
  const char *authorized_key;    /* the user's hutch public key, "ssh-ed25519 AAAA... c" */
  const char *host_key_private;  /* the guest's ed25519 host key, OpenSSH private key text */
  const char *host_key_public;   /* "ssh-ed25519 AAAA..." */
  GPtrArray *mounts;             /* HutchSeedMount*, may be NULL */
  const char *ready_channel;     /* virtio-serial port name the guest reports to */
} HutchSeedConfig;

typedef struct {
  char *meta_data;
  char *user_data;        /* begins with "#cloud-config\n" */
  char *network_config;
} HutchSeedDocuments;

void hutch_seed_documents_free(HutchSeedDocuments *docs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSeedDocuments, hutch_seed_documents_free)

HutchSeedDocuments *hutch_seed_build(const HutchProfile *profile, const HutchSeedConfig *config,
                                     GError **error);
/* Writes an ISO 9660 volume "cidata" (Rock Ridge + Joliet) holding the three documents. */
gboolean hutch_seed_write_iso(const HutchSeedDocuments *docs, const char *path,
                              GError **error);
