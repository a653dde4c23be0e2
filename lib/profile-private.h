/* profile-private.h: the HutchProfile structure, shared by the modules that turn a profile
 * into a domain, a seed, an image. Every field holds the fully expanded value (after `base:`
 * merging and defaults); paths are absolute except share paths, which keep a leading "~" to
 * be expanded on the side they belong to. */
#pragma once

#include "egress-private.h"
#include "hutch.h"

typedef enum { HUTCH_ACCEL_AUTO, HUTCH_ACCEL_KVM, HUTCH_ACCEL_TCG, HUTCH_ACCEL_N } HutchAccel;

const char *hutch_accel_to_string(HutchAccel accel);
gboolean hutch_accel_from_string(const char *text, HutchAccel *ret);

typedef enum {
  HUTCH_IMAGE_NONE,  /* not given: an error at create time */
  HUTCH_IMAGE_FILE,  /* image: { file: PATH } */
  HUTCH_IMAGE_URL,   /* image: { url: URL, digest: ALG:HEX | checksums: URL, fallback: } */
  HUTCH_IMAGE_BUILD, /* image: { build: { suite, packages, mirror, kernel } } */
  HUTCH_IMAGE_TEMPLATE, /* image: { template: NAME } (hutch template create) */
  HUTCH_IMAGE_N
} HutchImageKind;

typedef struct _HutchImageSpec HutchImageSpec;

struct _HutchImageSpec {
  HutchImageKind kind;
  char *file;      /* FILE: absolute path */
  char *url;       /* URL */
  char *digest;    /* URL: "sha256:HEX" / "sha512:HEX", or NULL with checksums */
  char *checksums; /* URL: URL of a SHA256SUMS / SHA512SUMS file */
  char *suite;     /* BUILD: e.g. "bookworm" */
  char **packages; /* BUILD: extra packages (NULL-terminated, may be NULL) */
  char *mirror;    /* BUILD: NULL = host's apt sources, else the distro mirror */
  char *kernel;    /* BUILD: the kernel package, NULL = linux-image-cloud-amd64 */
  char *template;  /* TEMPLATE: the template's name */
  /* URL: image: { fallback: { build: } }, built when the file cannot be downloaded (no
   * name resolution, no connection, an HTTP error; never after a digest mismatch), or
   * NULL. Its kind is always BUILD. */
  HutchImageSpec *fallback;
};

/* How long the guest may keep what it read of a share (virtiofsd's cache policy). */
typedef enum {
  HUTCH_SHARE_CACHE_AUTO,   /* names and attributes for 1 s: host edits seen within a second */
  HUTCH_SHARE_CACHE_ALWAYS, /* kept until the guest drops them, writes cached in the guest
                               (writeback): fastest, host edits may go unseen */
  HUTCH_SHARE_CACHE_NEVER,  /* nothing kept: every access asks the host */
} HutchShareCache;

/* "auto", "always", "never". */
const char *hutch_share_cache_name(HutchShareCache cache);
/* FALSE when text is none of them. */
gboolean hutch_share_cache_parse(const char *text, HutchShareCache *ret_cache);

typedef struct {
  char *host;  /* as written, "~" allowed (host user's home) */
  char *guest; /* as written, "~" allowed (guest user's home) */
  gboolean writable;
  gboolean create; /* create the host directory when missing */
  HutchShareCache cache;
} HutchShare;

typedef enum { HUTCH_PROTO_TCP, HUTCH_PROTO_UDP, HUTCH_PROTO_N } HutchProto;
const char *hutch_proto_to_string(HutchProto proto);

typedef struct {
  char *host_ip;                  /* "127.0.0.1" unless the profile says host_ip */
  guint16 host_start, host_end;   /* inclusive; start == end for one port */
  guint16 guest_start, guest_end; /* same length as the host range */
  HutchProto proto;
} HutchPort;

typedef struct {
  char *name;        /* unique within the profile */
  char **packages;   /* apt packages to install (NULL-terminated), or NULL */
  char *script;      /* file name under cloud-init/scripts/, or NULL */
  char *script_path; /* resolved absolute path of script, or NULL */
  char *run;         /* inline shell text, or NULL */
  gboolean as_user;  /* `as: user` (default root) */
  gboolean optional; /* a failure does not fail start */
} HutchProvisionStep;

typedef struct {
  char *key;
  char *value;
} HutchEnvVar;

/* secrets: a credential the guest uses without holding it. The guest's variable holds a
 * placeholder; the value is fetched on the host and only goes to the hosts listed. */
typedef enum { HUTCH_SECRET_ENV, HUTCH_SECRET_COMMAND, HUTCH_SECRET_FILE } HutchSecretSource;

typedef struct {
  char *name; /* the guest's variable: [A-Za-z_][A-Za-z0-9_]*, at most 64 chars */
  HutchSecretSource source;
  /* ENV: the host variable's name (the secret's own name for plain `env`); COMMAND: the
   * command line as written (split with g_shell_parse_argv when run; must parse and be
   * non-empty); FILE: the path as written, absolute or starting with "~" (the host user's
   * home) */
  char *from;
  /* NULL-terminated, at least one: "NAME" or "NAME:PORT", never a wildcard, lower-cased; a
   * name without a port means 443 and is stored without the port */
  char **hosts;
  gboolean optional; /* default FALSE */
  guint ttl;         /* seconds, 0 = none */
} HutchSecret;

void hutch_secret_free(HutchSecret *secret);

struct _HutchProfile {
  char *name;       /* the profile's name (file name without .yaml) */
  char *path;       /* absolute path of the file it was read from */
  char *base;       /* the base as written, or NULL */
  guint cpus;       /* default 2 */
  guint64 memory;   /* bytes, default 4 GiB */
  guint64 disk;     /* bytes, default 40 GiB */
  HutchAccel accel; /* default auto */
  HutchImageSpec image;
  char *user_name;      /* NULL: the host user's name */
  gint64 user_uid;      /* -1: the host user's uid */
  gint64 user_gid;      /* -1: the guest uid (the user's own group gets its number) */
  gboolean user_sudo;   /* default TRUE */
  char *user_shell;     /* default /bin/bash */
  GPtrArray *shares;    /* HutchShare*, owned */
  GPtrArray *ports;     /* HutchPort*, owned */
  GPtrArray *provision; /* HutchProvisionStep*, owned, in order */
  GPtrArray *env;       /* HutchEnvVar*, owned, in order of first definition */
  /* HutchSecret*, owned, base's first; a name defined again in a derived file replaces the
   * base's entry in place */
  GPtrArray *secrets;
  guint boot_timeout;   /* seconds, default 600 */
  char *description;    /* `description:` of the file itself (not inherited), or NULL */
  /* network: egress is HUTCH_EGRESS_UNSET when no file of the chain says (the policy then
   * has HUTCH_EGRESS_DEFAULT); allow and deny are rule texts (char*, owned, as
   * hutch_egress_rule_parse normalises them), the base's first, each text once. */
  HutchEgressMode egress;
  GPtrArray *egress_allow;
  GPtrArray *egress_deny;
  /* Where each value was read, through the base chain: "FILE:LINE" by key ("cpus",
   * "user.uid", "image", "shares:GUEST", "ports[N]", "provision:NAME", "env.NAME",
   * "secrets:NAME", "network.egress"; "network.allow" and "network.deny" list every file that
   * adds to them); a key that is absent has its default. */
  GHashTable *origins;
};

HutchProfile *hutch_profile_new_defaults(void);

/* Makes the profile's image the template's (image: {template: NAME}). */
void hutch_profile_set_template_image(HutchProfile *profile, const char *template);

/* Drops every share of the profile (a template keeps none of its source's). */
void hutch_profile_clear_shares(HutchProfile *profile);
/* Loads exactly one file (no search path); base chains are still resolved. */
HutchProfile *hutch_profile_load_file(const char *path, GError **error);
/* Parses YAML text as if read from `filename` (for errors and relative paths). */
HutchProfile *hutch_profile_load_data(const char *data, gsize len, const char *filename,
                                      GError **error);
/* Finds a profile by name on the search path; returns its absolute path. */
char *hutch_profile_find(const char *name, GError **error);
/* Parses a --port / ports: spec "[HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp]" (an IPv6
 * HOST_IP in brackets; "PORT" alone means PORT:PORT). Errors: HUTCH_ERROR_USAGE. */
HutchPort *hutch_port_parse(const char *spec, GError **error);
/* Parses a --share spec "HOST:GUEST[:OPTION,...]", OPTION one of ro, rw, cache=MODE (default
 * rw: the user asked for it explicitly). Paths must be absolute or start with "~". Errors:
 * HUTCH_ERROR_USAGE. */
HutchShare *hutch_share_parse(const char *spec, GError **error);
/* Command-line additions, with the rules of the profile: a share with the guest path of an
 * existing one replaces it; a port whose host range overlaps an existing one (same proto) is
 * a HUTCH_ERROR_USAGE error. Take ownership of the item on success only. */
gboolean hutch_profile_add_share(HutchProfile *profile, HutchShare *share, GError **error);
gboolean hutch_profile_add_port(HutchProfile *profile, HutchPort *port, GError **error);
/* `hutch edit`'s removals, HUTCH_ERROR_USAGE naming what there is when nothing matches.
 * remove_port: spec is "HOST[-END][/tcp|/udp]" (or a whole --port spec, whose host side
 * counts); it removes the port whose host range and protocol are exactly these (host ranges
 * of one protocol never overlap in a profile, so at most one matches). remove_share: the
 * share on guest path `guest` ("~" is the guest user's home, guest_home, on both sides). */
gboolean hutch_profile_remove_port(HutchProfile *profile, const char *spec, GError **error);
gboolean hutch_profile_remove_share(HutchProfile *profile, const char *guest,
                                    const char *guest_home, GError **error);
/* A port's host side as the user writes it: "127.0.0.1:8000-9000", "[::1]:8080",
 * "127.0.0.1:5353/udp"; and its guest side: "8000-9000". */
char *hutch_port_host_to_string(const HutchPort *port);
char *hutch_port_guest_to_string(const HutchPort *port);
/* The profile's network policy: its mode (HUTCH_EGRESS_DEFAULT when unset), allow and deny
 * through hutch_egress_policy_add (deny wins: a text in both is denied). */
HutchEgressPolicy *hutch_profile_egress_policy(const HutchProfile *profile, GError **error);
/* The directories searched for profiles by name, in order (existing or not). */
GPtrArray *hutch_profile_search_path(void);
void hutch_share_free(HutchShare *share);
void hutch_port_free(HutchPort *port);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchPort, hutch_port_free)
