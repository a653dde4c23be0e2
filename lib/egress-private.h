/* egress-private.h: the network policy, what the guest's outbound connections may reach.
 *
 * The rules are pure (this file and egress.c); the enforcement is the egress helper
 * (egress-helper.c): passt runs in a network namespace of its own that has no interface but
 * its loopback, so nothing the guest sends can leave but through the helper's proxy, which
 * decides each connection here. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <sys/socket.h>

#include "hutch.h"

typedef enum {
  HUTCH_EGRESS_UNSET = 0,     /* not said (a profile that leaves it to its base or default) */
  HUTCH_EGRESS_NONE,          /* nothing leaves the guest */
  HUTCH_EGRESS_ALLOWLIST,     /* only the destinations in allow */
  HUTCH_EGRESS_PUBLIC,        /* any public destination (the default) */
  HUTCH_EGRESS_UNRESTRICTED,  /* passt as it is: the host's own addresses are reachable */
  HUTCH_EGRESS_N,
} HutchEgressMode;

/* The mode a profile gets when it does not say */
#define HUTCH_EGRESS_DEFAULT HUTCH_EGRESS_PUBLIC

const char *hutch_egress_mode_to_string(HutchEgressMode mode);
/* FALSE for anything but none, allowlist, public, unrestricted */
gboolean hutch_egress_mode_from_string(const char *text, HutchEgressMode *ret);

/* One destination of allow: or deny:
 *   NAME            the name, ports 80 and 443 (in deny: every port)
 *   *.NAME          the name and every name under it, ports 80 and 443
 *   NAME:PORT       one port; PORT "*" is every port
 *   ADDR[/PREFIX][:PORT]     an IPv4 address or range
 *   [ADDR[/PREFIX]][:PORT]   an IPv6 address or range, in brackets
 * Names are matched without case and without a final dot. */
typedef struct {
  char *text;        /* as written (normalised: lower case) */
  char *name;        /* the name (without "*."), or NULL for an address rule */
  gboolean wildcard; /* "*.NAME" */
  int family;        /* AF_INET or AF_INET6 for an address rule */
  guint8 addr[16];   /* network address of an address rule */
  guint prefix;      /* prefix length of an address rule */
  guint port;        /* 1-65535; 0: 80 and 443; HUTCH_EGRESS_ANY_PORT: all */
} HutchEgressRule;

#define HUTCH_EGRESS_ANY_PORT 65536

/* Parses one rule. Errors: HUTCH_ERROR_USAGE, the message says what is wrong with it. */
HutchEgressRule *hutch_egress_rule_parse(const char *text, GError **error);
void hutch_egress_rule_free(HutchEgressRule *rule);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchEgressRule, hutch_egress_rule_free)

/* A VM's policy. */
typedef struct {
  HutchEgressMode mode;
  GPtrArray *allow; /* HutchEgressRule*, owned */
  GPtrArray *deny;  /* HutchEgressRule*, owned: wins over allow and the mode */
} HutchEgressPolicy;

HutchEgressPolicy *hutch_egress_policy_new(HutchEgressMode mode);
void hutch_egress_policy_free(HutchEgressPolicy *policy);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchEgressPolicy, hutch_egress_policy_free)

/* Adds a rule text to allow (or deny); a rule already there (same text) is not added again;
 * the same text is taken out of the other list. */
gboolean hutch_egress_policy_add(HutchEgressPolicy *policy, gboolean deny, const char *text,
                                 GError **error);

/* The policy as JSON ({"mode": ..., "allow": [...], "deny": [...]}) and back. The file
 * HUTCH_EGRESS_POLICY_FILE in the instance directory holds a VM's policy. */
#define HUTCH_EGRESS_POLICY_FILE "egress-policy.json"
/* The rules' texts as a JSON array */
JsonArray *hutch_egress_rules_to_json(GPtrArray *rules);
char *hutch_egress_policy_to_json(const HutchEgressPolicy *policy);
HutchEgressPolicy *hutch_egress_policy_from_json(const char *text, GError **error);
gboolean hutch_egress_policy_save(const HutchEgressPolicy *policy, const char *instance_dir,
                                  GError **error);
/* NULL with G_FILE_ERROR_NOENT when the instance has no policy file */
HutchEgressPolicy *hutch_egress_policy_load(const char *instance_dir, GError **error);

/* The class of an address that `public` refuses: "loopback", "link-local", "private",
 * "shared (CGNAT)", "unique-local", "multicast", "reserved", "unspecified"; NULL for a
 * public address. */
const char *hutch_egress_address_class(const struct sockaddr *addr);

/* The decision for a connection to port, to name (NULL: the guest connected to a bare
 * address) before it is resolved. TRUE: go on and resolve; FALSE: *ret_reason says why. */
gboolean hutch_egress_check_name(const HutchEgressPolicy *policy, const char *name, guint port,
                                 char **ret_reason);

/* The decision for one address the name resolved to (or the bare address the guest asked
 * for). host_addresses: the host's own addresses (GInetAddress*), always refused (an allow
 * rule does not open them); outside: addresses to take as outside servers (tests only;
 * NULL). Loopback is never reached, nor the unspecified addresses (0.0.0.0/8, ::) that lead
 * to it. A v4-mapped IPv6 address (::ffff:a.b.c.d) is taken as the IPv4 address. */
gboolean hutch_egress_check_address(const HutchEgressPolicy *policy, const char *name,
                                    const struct sockaddr *addr, guint port,
                                    GPtrArray *host_addresses, GPtrArray *outside,
                                    char **ret_reason);
