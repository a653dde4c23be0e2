/* Unit tests for egress.c: rules, the policy file and the decisions (no connections). */
#include "config.h"

#include <arpa/inet.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "egress-helper-private.h"
#include "egress-private.h"
#include "util-private.h"
#include "policy-fixture.h"

/* ---- Helpers -------------------------------------------------------------------------- */

static void assert_contains(const char *text, const char *part) {
  if (!text || !strstr(text, part))
    g_error("'%s' does not contain '%s'", text ? text : "(null)", part);
}

/* text: an IPv4 or IPv6 address (IPv6 when it holds ':') */
static const struct sockaddr *sockaddr_of(struct sockaddr_storage *ss, const char *text) {
  memset(ss, 0, sizeof *ss);
  if (strchr(text, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    g_assert_cmpint(inet_pton(AF_INET6, text, &s6->sin6_addr), ==, 1);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    g_assert_cmpint(inet_pton(AF_INET, text, &s4->sin_addr), ==, 1);
  }
  return (const struct sockaddr *)ss;
}


/* NULL when the name may be resolved; else the reason, which is never empty */
static char *name_decision(const HutchEgressPolicy *policy, const char *name, guint port) {
  char *reason = NULL;
  if (hutch_egress_check_name(policy, name, port, &reason)) {
    g_assert_null(reason);
    return NULL;
  }
  g_assert_nonnull(reason);
  g_assert_cmpstr(reason, !=, "");
  return reason;
}

/* NULL when the address may be reached; else the reason, which is never empty */
static char *address_decision(const HutchEgressPolicy *policy, const char *name,
                              const char *address, guint port, GPtrArray *host,
                              GPtrArray *outside) {
  struct sockaddr_storage ss;
  char *reason = NULL;
  if (hutch_egress_check_address(policy, name, sockaddr_of(&ss, address), port, host, outside,
                                 &reason)) {
    g_assert_null(reason);
    return NULL;
  }
  g_assert_nonnull(reason);
  g_assert_cmpstr(reason, !=, "");
  return reason;
}

static void assert_name_allowed(const HutchEgressPolicy *policy, const char *name, guint port) {
  g_autofree char *reason = name_decision(policy, name, port);
  if (reason)
    g_error("%s:%u refused (%s), expected allowed", name ? name : "(bare)", port, reason);
}

/* refused, with a reason that holds part (when not NULL) */
static void assert_name_refused(const HutchEgressPolicy *policy, const char *name, guint port,
                                const char *part) {
  g_autofree char *reason = name_decision(policy, name, port);
  if (!reason)
    g_error("%s:%u allowed, expected refused", name ? name : "(bare)", port);
  if (part)
    assert_contains(reason, part);
}

static void assert_address_allowed(const HutchEgressPolicy *policy, const char *name,
                                   const char *address, guint port, GPtrArray *host,
                                   GPtrArray *outside) {
  g_autofree char *reason = address_decision(policy, name, address, port, host, outside);
  if (reason)
    g_error("%s port %u refused (%s), expected allowed", address, port, reason);
}

static void assert_address_refused(const HutchEgressPolicy *policy, const char *name,
                                   const char *address, guint port, GPtrArray *host,
                                   GPtrArray *outside, const char *part) {
  g_autofree char *reason = address_decision(policy, name, address, port, host, outside);
  if (!reason)
    g_error("%s port %u allowed, expected refused", address, port);
  if (part)
    assert_contains(reason, part);
}

static GPtrArray *inet_addresses(const char *const *texts) {
  GPtrArray *list = g_ptr_array_new_with_free_func(g_object_unref);
  for (const char *const *t = texts; *t; t++) {
    GInetAddress *a = g_inet_address_new_from_string(*t);
    g_assert_nonnull(a);
    g_ptr_array_add(list, a);
  }
  return list;
}

static HutchEgressRule *parse_ok(const char *text) {
  g_autoptr(GError) error = NULL;
  HutchEgressRule *rule = hutch_egress_rule_parse(text, &error);
  g_assert_no_error(error);
  g_assert_nonnull(rule);
  return rule;
}

/* ---- Modes ---------------------------------------------------------------------------- */

static void test_mode_strings(void) {
  static const char *const names[] = {"none", "allowlist", "public", "unrestricted"};
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_NONE, HUTCH_EGRESS_ALLOWLIST,
                                          HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_UNRESTRICTED};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    HutchEgressMode mode = HUTCH_EGRESS_UNSET;
    g_assert_cmpstr(hutch_egress_mode_to_string(modes[i]), ==, names[i]);
    g_assert_true(hutch_egress_mode_from_string(names[i], &mode));
    g_assert_cmpint(mode, ==, modes[i]);
  }
  g_assert_cmpstr(hutch_egress_mode_to_string(HUTCH_EGRESS_UNSET), ==, "unset");
  g_assert_cmpstr(hutch_egress_mode_to_string(HUTCH_EGRESS_N), ==, "unset");
  g_assert_cmpint(HUTCH_EGRESS_DEFAULT, ==, HUTCH_EGRESS_PUBLIC);
  /* "unset" is not a mode anyone may ask for; nor is a mode in another case */
  static const char *const bad[] = {"unset", "Public", "PUBLIC", "", "public ", "allow"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    HutchEgressMode mode = HUTCH_EGRESS_NONE;
    g_assert_false(hutch_egress_mode_from_string(bad[i], &mode));
    g_assert_cmpint(mode, ==, HUTCH_EGRESS_NONE); /* untouched */
  }
  HutchEgressMode mode = HUTCH_EGRESS_NONE;
  g_assert_false(hutch_egress_mode_from_string(NULL, &mode));
}

/* ---- Rules ---------------------------------------------------------------------------- */

static void test_rule_names(void) {
  g_autoptr(HutchEgressRule) plain = parse_ok("example.com");
  g_assert_cmpstr(plain->text, ==, "example.com");
  g_assert_cmpstr(plain->name, ==, "example.com");
  g_assert_false(plain->wildcard);
  g_assert_cmpuint(plain->port, ==, 0);

  g_autoptr(HutchEgressRule) wild = parse_ok("*.npmjs.org");
  g_assert_cmpstr(wild->text, ==, "*.npmjs.org");
  g_assert_cmpstr(wild->name, ==, "npmjs.org");
  g_assert_true(wild->wildcard);
  g_assert_cmpuint(wild->port, ==, 0);

  g_autoptr(HutchEgressRule) one = parse_ok("git.example.org:22");
  g_assert_cmpstr(one->text, ==, "git.example.org:22");
  g_assert_cmpstr(one->name, ==, "git.example.org");
  g_assert_cmpuint(one->port, ==, 22);

  g_autoptr(HutchEgressRule) any = parse_ok("name:*");
  g_assert_cmpstr(any->name, ==, "name");
  g_assert_cmpuint(any->port, ==, HUTCH_EGRESS_ANY_PORT);

  g_autoptr(HutchEgressRule) bounds = parse_ok("*.example.org:65535");
  g_assert_true(bounds->wildcard);
  g_assert_cmpstr(bounds->name, ==, "example.org");
  g_assert_cmpuint(bounds->port, ==, 65535);
  g_autoptr(HutchEgressRule) low = parse_ok("example.org:1");
  g_assert_cmpuint(low->port, ==, 1);

  g_autoptr(HutchEgressRule) underscore = parse_ok("_dmarc.example.com");
  g_assert_cmpstr(underscore->name, ==, "_dmarc.example.com");
  g_autoptr(HutchEgressRule) digits = parse_ok("1password.com");
  g_assert_cmpstr(digits->name, ==, "1password.com");
  g_assert_cmpint(digits->family, ==, 0);

  /* the longest label (63) and the longest name (253) */
  g_autofree char *label63 = g_strnfill(63, 'a');
  g_autofree char *long_label = g_strconcat(label63, ".com", NULL);
  g_autoptr(HutchEgressRule) l63 = parse_ok(long_label);
  g_assert_cmpstr(l63->name, ==, long_label);
  g_autofree char *name253 = g_strjoin(".", label63, label63, label63, "", NULL);
  /* 3*63 + 3 dots = 192; add a 61-byte label: 253 */
  g_autofree char *label61 = g_strnfill(61, 'b');
  g_autofree char *full253 = g_strconcat(name253, label61, NULL);
  g_assert_cmpuint(strlen(full253), ==, 253);
  g_autoptr(HutchEgressRule) n253 = parse_ok(full253);
  g_assert_cmpstr(n253->name, ==, full253);
  g_autofree char *full254 = g_strconcat(full253, "b", NULL);
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_egress_rule_parse(full254, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

static void test_rule_normalised(void) {
  /* upper case is folded, in the text and the name */
  g_autoptr(HutchEgressRule) upper = parse_ok("Registry.NPMJS.org");
  g_assert_cmpstr(upper->name, ==, "registry.npmjs.org");
  g_assert_cmpstr(upper->text, ==, "registry.npmjs.org");
  g_autoptr(HutchEgressRule) wild = parse_ok("*.NpmJS.ORG:*");
  g_assert_cmpstr(wild->name, ==, "npmjs.org");
  g_assert_cmpstr(wild->text, ==, "*.npmjs.org:*");
  g_assert_true(wild->wildcard);
  g_autoptr(HutchEgressRule) v6 = parse_ok("[2001:DB8::ABCD]");
  g_assert_cmpstr(v6->text, ==, "[2001:db8::abcd]");

  /* a final dot is dropped from the name (the text keeps it as written) */
  g_autoptr(HutchEgressRule) dot = parse_ok("example.com.");
  g_assert_cmpstr(dot->name, ==, "example.com");
  g_autoptr(HutchEgressRule) dot_port = parse_ok("*.Example.COM.:8443");
  g_assert_cmpstr(dot_port->name, ==, "example.com");
  g_assert_true(dot_port->wildcard);
  g_assert_cmpuint(dot_port->port, ==, 8443);
  /* and it matches the name without the dot */
  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"Example.COM.", NULL}, NULL);
  assert_name_allowed(policy, "example.com", 443);
}

static void test_rule_ipv4(void) {
  g_autoptr(HutchEgressRule) host = parse_ok("198.51.100.7");
  g_assert_null(host->name);
  g_assert_false(host->wildcard);
  g_assert_cmpint(host->family, ==, AF_INET);
  g_assert_cmpuint(host->prefix, ==, 32);
  g_assert_cmpuint(host->port, ==, 0);
  const guint8 want_host[4] = {198, 51, 100, 7};
  g_assert_cmpmem(host->addr, 4, want_host, 4);

  g_autoptr(HutchEgressRule) range = parse_ok("198.51.100.0/24:8080");
  g_assert_null(range->name);
  g_assert_cmpint(range->family, ==, AF_INET);
  g_assert_cmpuint(range->prefix, ==, 24);
  g_assert_cmpuint(range->port, ==, 8080);
  g_assert_cmpstr(range->text, ==, "198.51.100.0/24:8080");
  const guint8 want_range[4] = {198, 51, 100, 0};
  g_assert_cmpmem(range->addr, 4, want_range, 4);

  /* host bits under the prefix are cleared, across a byte */
  g_autoptr(HutchEgressRule) odd = parse_ok("10.255.2.3/9:*");
  g_assert_cmpuint(odd->prefix, ==, 9);
  g_assert_cmpuint(odd->port, ==, HUTCH_EGRESS_ANY_PORT);
  const guint8 want_odd[4] = {10, 128, 0, 0};
  g_assert_cmpmem(odd->addr, 4, want_odd, 4);

  g_autoptr(HutchEgressRule) all = parse_ok("0.0.0.0/0");
  g_assert_cmpuint(all->prefix, ==, 0);
  g_autoptr(HutchEgressRule) masked = parse_ok("198.51.100.7/24");
  g_assert_cmpmem(masked->addr, 4, want_range, 4);
}

static void test_rule_ipv6(void) {
  g_autoptr(HutchEgressRule) range = parse_ok("[2001:db8::/32]:443");
  g_assert_null(range->name);
  g_assert_cmpint(range->family, ==, AF_INET6);
  g_assert_cmpuint(range->prefix, ==, 32);
  g_assert_cmpuint(range->port, ==, 443);
  const guint8 want_range[16] = {0x20, 0x01, 0x0d, 0xb8};
  g_assert_cmpmem(range->addr, 16, want_range, 16);

  g_autoptr(HutchEgressRule) lo = parse_ok("[::1]");
  g_assert_cmpint(lo->family, ==, AF_INET6);
  g_assert_cmpuint(lo->prefix, ==, 128);
  g_assert_cmpuint(lo->port, ==, 0);
  const guint8 want_lo[16] = {[15] = 1};
  g_assert_cmpmem(lo->addr, 16, want_lo, 16);

  g_autoptr(HutchEgressRule) masked = parse_ok("[2001:db8:1234:5678::1/36]:*");
  g_assert_cmpuint(masked->prefix, ==, 36);
  g_assert_cmpuint(masked->port, ==, HUTCH_EGRESS_ANY_PORT);
  const guint8 want_masked[16] = {0x20, 0x01, 0x0d, 0xb8, 0x10};
  g_assert_cmpmem(masked->addr, 16, want_masked, 16);

  g_autoptr(HutchEgressRule) all = parse_ok("[::/0]:*");
  g_assert_cmpuint(all->prefix, ==, 0);
}

static void test_rule_bad(void) {
  g_autofree char *label64 = g_strnfill(64, 'a');
  g_autofree char *long_label = g_strconcat(label64, ".com", NULL);
  const char *const bad[] = {
      "",
      "a..b",
      "-a.com",
      "a-.com",
      ".",
      ".example.com",
      "example.com..",
      "*.",
      "*",
      "*.*.com",
      "name:0",
      "name:65536",
      "name:x",
      "name:",
      "name:-1",
      "name:+80",
      ":443",
      "a.com:80:90",
      "2001:db8::1",
      "1.2.3.4/33",
      "1.2.3.4/",
      "1.2.3.4/-1",
      "1.2.3",
      "256.1.1.1",
      "1.2.3.4/8/8",
      "[::1",
      "[::1]x",
      "[::1]:0",
      "[::1]:",
      "[2001:db8::/129]",
      "[1.2.3.4]",
      "[]",
      "[example.com]",
      "a b",
      " example.com",
      "example.com\n",
      long_label,
      "a*.com",
      "x.*.com",
      "exa/mple.com",
      "caf\xc3\xa9.com",
      "http://example.com",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchEgressRule) rule = hutch_egress_rule_parse(bad[i], &error);
    if (rule)
      g_error("'%s' parsed, expected refused", bad[i]);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_autofree char *quoted = g_strdup_printf("'%s'", bad[i]);
    assert_contains(error->message, quoted);
  }
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_egress_rule_parse(NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

/* ---- Matching ------------------------------------------------------------------------- */

static void test_match_default_ports(void) {
  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"example.com", NULL}, NULL);
  assert_name_allowed(policy, "example.com", 80);
  assert_name_allowed(policy, "example.com", 443);
  static const guint others[] = {1, 22, 79, 81, 442, 444, 8080, 8443, 65535};
  for (gsize i = 0; i < G_N_ELEMENTS(others); i++)
    assert_name_refused(policy, "example.com", others[i], "not in the allowlist");
  /* a name rule is for that name only */
  assert_name_refused(policy, "www.example.com", 443, NULL);
  assert_name_refused(policy, "com", 443, NULL);
  assert_name_refused(policy, "example.co", 443, NULL);
  assert_name_refused(policy, "example.com.evil", 443, NULL);

  /* NAME:PORT is that port only, NAME:* every port */
  g_autoptr(HutchEgressPolicy) ports =
      policy_of(HUTCH_EGRESS_ALLOWLIST,
                (const char *const[]){"git.example.org:22", "any.example.org:*", NULL}, NULL);
  assert_name_allowed(ports, "git.example.org", 22);
  assert_name_refused(ports, "git.example.org", 443, "git.example.org:443");
  assert_name_refused(ports, "git.example.org", 80, NULL);
  assert_name_allowed(ports, "any.example.org", 1);
  assert_name_allowed(ports, "any.example.org", 443);
  assert_name_allowed(ports, "any.example.org", 65535);
}

static void test_match_wildcard(void) {
  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"*.npmjs.org", NULL}, NULL);
  assert_name_allowed(policy, "registry.npmjs.org", 443);
  assert_name_allowed(policy, "a.b.npmjs.org", 443);
  /* "*.NAME" is "the name and every name under it" (egress-private.h): the apex too */
  assert_name_allowed(policy, "npmjs.org", 443);
  assert_name_allowed(policy, "registry.npmjs.org", 80);
  assert_name_refused(policy, "registry.npmjs.org", 22, NULL);
  /* no suffix match without a dot, nothing after the name */
  assert_name_refused(policy, "evilnpmjs.org", 443, NULL);
  assert_name_refused(policy, "npmjs.org.evil.com", 443, NULL);
  assert_name_refused(policy, "registry.npmjs.org.evil.com", 443, NULL);
  assert_name_refused(policy, "org", 443, NULL);
  assert_name_refused(policy, ".npmjs.org", 443, NULL);
  assert_name_refused(policy, "pmjs.org", 443, NULL);
  assert_name_refused(policy, "", 443, NULL);
}

/* ---- Decisions on a name -------------------------------------------------------------- */

static void test_check_name_none(void) {
  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_NONE, (const char *const[]){"example.com:*", NULL}, NULL);
  assert_name_refused(policy, "example.com", 443, "none");
  assert_name_refused(policy, "example.com", 22, "none");
  assert_name_refused(policy, NULL, 443, "none");
}

static void test_check_name_allowlist(void) {
  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_ALLOWLIST,
                (const char *const[]){"registry.npmjs.org", "*.pypi.org", NULL}, NULL);
  assert_name_allowed(policy, "registry.npmjs.org", 443);
  assert_name_allowed(policy, "files.pypi.org", 443);
  assert_name_refused(policy, "example.com", 443, "example.com:443");
  assert_name_refused(policy, "example.com", 443, "allowlist");
  assert_name_refused(policy, "npmjs.org", 443, NULL);
  /* a bare address is decided by its address (hutch_egress_check_address) */
  assert_name_allowed(policy, NULL, 443);
  /* an empty allowlist refuses every name */
  g_autoptr(HutchEgressPolicy) empty = policy_of(HUTCH_EGRESS_ALLOWLIST, NULL, NULL);
  assert_name_refused(empty, "example.com", 443, NULL);
  /* an address rule does not admit a name */
  g_autoptr(HutchEgressPolicy) addr_only =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"0.0.0.0/0:*", NULL}, NULL);
  assert_name_refused(addr_only, "example.com", 443, NULL);
}

static void test_check_name_public(void) {
  g_autoptr(HutchEgressPolicy) policy = policy_of(HUTCH_EGRESS_PUBLIC, NULL, NULL);
  assert_name_allowed(policy, "example.com", 443);
  assert_name_allowed(policy, "example.com", 22);
  assert_name_allowed(policy, "example.com", 8080);
  assert_name_allowed(policy, NULL, 443);
}

static void test_check_name_deny_wins(void) {
  g_autoptr(HutchEgressPolicy) pub =
      policy_of(HUTCH_EGRESS_PUBLIC, NULL, (const char *const[]){"*.evil.com", NULL});
  assert_name_refused(pub, "evil.com", 443, "'*.evil.com'");
  assert_name_refused(pub, "www.evil.com", 80, "denied by rule '*.evil.com'");
  assert_name_allowed(pub, "notevil.com", 443);
  /* a deny without a port is for every port (an allow's is 80 and 443: egress-private.h) */
  assert_name_refused(pub, "evil.com", 22, "'*.evil.com'");

  g_autoptr(HutchEgressPolicy) list =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"*.example.com:*", NULL},
                (const char *const[]){"secret.example.com:*", NULL});
  assert_name_allowed(list, "www.example.com", 22);
  assert_name_refused(list, "secret.example.com", 443, "'secret.example.com:*'");
  assert_name_refused(list, "secret.example.com", 22, "'secret.example.com:*'");

  /* the same destination in both: hutch_egress_policy_add keeps the last; with both lists
   * filled by hand deny still wins */
  g_autoptr(HutchEgressPolicy) both = hutch_egress_policy_new(HUTCH_EGRESS_ALLOWLIST);
  g_ptr_array_add(both->allow, parse_ok("example.com"));
  g_ptr_array_add(both->deny, parse_ok("example.com"));
  assert_name_refused(both, "example.com", 443, "denied by rule 'example.com'");
}

static void test_check_name_port_53(void) {
  g_autoptr(HutchEgressPolicy) pub = policy_of(HUTCH_EGRESS_PUBLIC, NULL, NULL);
  assert_name_refused(pub, "dns.google", 53, "resolver");
  assert_name_refused(pub, NULL, 53, "resolver");
  g_autoptr(HutchEgressPolicy) list = policy_of(
      HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"dns.google:53", "one.one:*", NULL}, NULL);
  assert_name_refused(list, "dns.google", 53, "resolver");
  assert_name_refused(list, "one.one", 53, "resolver");
  assert_name_allowed(list, "one.one", 853);
}

/* ---- Decisions on an address ---------------------------------------------------------- */

static void test_check_address_none(void) {
  g_autoptr(HutchEgressPolicy) policy = policy_of(
      HUTCH_EGRESS_NONE, (const char *const[]){"93.184.216.34:*", "[::/0]:*", NULL}, NULL);
  g_autoptr(GPtrArray) outside = inet_addresses((const char *const[]){"93.184.216.34", NULL});
  assert_address_refused(policy, "example.com", "93.184.216.34", 443, NULL, NULL, "none");
  assert_address_refused(policy, NULL, "93.184.216.34", 443, NULL, NULL, "none");
  assert_address_refused(policy, NULL, "93.184.216.34", 443, NULL, outside, "none");
  assert_address_refused(policy, NULL, "2606:2800:220:1:248:1893:25c8:1946", 443, NULL, NULL,
                         "none");
}

static void test_check_address_loopback(void) {
  static const char *const loopback[] = {"127.0.0.1", "127.1.2.3", "127.255.255.254", "::1",
                                         "::ffff:127.0.0.1"};
  static const char *const allow_all[] = {"127.0.0.0/8:*", "0.0.0.0/0:*", "[::1]:*", "[::/0]:*",
                                          NULL};
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) bare = policy_of(modes[m], NULL, NULL);
    g_autoptr(HutchEgressPolicy) allowed = policy_of(modes[m], allow_all, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(loopback); i++) {
      assert_address_refused(bare, "localhost", loopback[i], 443, NULL, NULL, "loopback");
      assert_address_refused(bare, NULL, loopback[i], 80, NULL, NULL, "loopback");
      /* an allow range that covers loopback does not open it */
      assert_address_refused(allowed, "localhost", loopback[i], 443, NULL, NULL, "loopback");
      assert_address_refused(allowed, NULL, loopback[i], 22, NULL, NULL, "loopback");
    }
  }
  /* the reason names the address and the name asked for */
  g_autoptr(HutchEgressPolicy) pub = policy_of(HUTCH_EGRESS_PUBLIC, NULL, NULL);
  assert_address_refused(pub, "evil.example", "127.0.0.1", 443, NULL, NULL,
                         "127.0.0.1 (the address of evil.example) is the host's loopback");
}

static void test_check_address_host(void) {
  /* public-looking host addresses, so that only the host check can refuse them */
  g_autoptr(GPtrArray) host =
      inet_addresses((const char *const[]){"81.2.69.142", "2a02:8010::1", "192.168.1.10", NULL});
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) bare = policy_of(modes[m], NULL, NULL);
    assert_address_refused(bare, "me.example", "81.2.69.142", 443, host, NULL,
                           "81.2.69.142 (the address of me.example) is an address of the host");
    assert_address_refused(bare, "me.example", "2a02:8010::1", 443, host, NULL,
                           "address of the host");
    assert_address_refused(bare, NULL, "81.2.69.142", 443, host, NULL, "address of the host");
    /* without the host list the same address is an ordinary public one */
    if (modes[m] == HUTCH_EGRESS_PUBLIC)
      assert_address_allowed(bare, NULL, "81.2.69.142", 443, NULL, NULL);
    /* another public address is not the host's */
    assert_address_allowed(bare, "example.com", "81.2.69.143", 443, host, NULL);
    assert_address_allowed(bare, "example.com", "2a02:8010::2", 443, host, NULL);

    /* no allow rule opens it: not one that names it, not a range around it (allowing a LAN
     * must not open the host's own address there, and its services on 0.0.0.0) */
    g_autoptr(HutchEgressPolicy) named = policy_of(
        modes[m],
        (const char *const[]){"81.2.69.142", "[2a02:8010::1]:22", "192.168.1.0/24:*", NULL},
        NULL);
    assert_address_refused(named, "me.example", "81.2.69.142", 443, host, NULL,
                           "address of the host");
    assert_address_refused(named, NULL, "81.2.69.142", 80, host, NULL, "address of the host");
    assert_address_refused(named, NULL, "2a02:8010::1", 22, host, NULL, "address of the host");
    assert_address_refused(named, NULL, "192.168.1.10", 5432, host, NULL, "address of the host");
    /* while the range's other addresses are open */
    assert_address_allowed(named, NULL, "192.168.1.11", 5432, host, NULL);
    /* a name rule for the host's name does not */
    g_autoptr(HutchEgressPolicy) by_name =
        policy_of(modes[m], (const char *const[]){"me.example:*", NULL}, NULL);
    assert_address_refused(by_name, "me.example", "81.2.69.142", 443, host, NULL,
                           "address of the host");
  }
}

static void test_check_address_special(void) {
  static const struct {
    const char *address;
    const char *class;
  } special[] = {
      {"10.0.0.1", "private"},
      {"172.16.5.4", "private"},
      {"192.168.1.1", "private"},
      {"100.64.0.1", "shared (CGNAT)"},
      {"169.254.169.254", "link-local"},
      {"fd00::1", "unique-local"},
      {"fc00::1", "unique-local"},
      {"fe80::1", "link-local"},
      {"::ffff:10.0.0.1", "private"},
      {"::ffff:169.254.169.254", "link-local"},
      {"::ffff:100.64.0.1", "shared (CGNAT)"},
      {"224.0.0.1", "multicast"},
      {"ff02::1", "multicast"},
      {"240.0.0.1", "reserved"},
      {"255.255.255.255", "reserved"},
      {"198.18.0.1", "reserved"},
      {"2001:db8::1", "reserved"},
  };
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) policy = policy_of(modes[m], NULL, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(special); i++) {
      g_autofree char *part =
          g_strdup_printf("%s is a %s address", special[i].address, special[i].class);
      assert_address_refused(policy, NULL, special[i].address, 443, NULL, NULL, part);
      /* a name that resolves there (DNS rebinding) is refused the same */
      assert_address_refused(policy, "rebind.example", special[i].address, 443, NULL, NULL,
                             "(the address of rebind.example)");
    }
  }
  /* an allow address rule opens a private range, for its ports */
  g_autoptr(HutchEgressPolicy) lan = policy_of(
      HUTCH_EGRESS_PUBLIC, (const char *const[]){"10.0.0.0/8", "[fd00::/8]:5432", NULL}, NULL);
  assert_address_allowed(lan, NULL, "10.1.2.3", 443, NULL, NULL);
  assert_address_allowed(lan, "git.lan", "10.1.2.3", 80, NULL, NULL);
  assert_address_refused(lan, NULL, "10.1.2.3", 22, NULL, NULL, "private");
  assert_address_allowed(lan, NULL, "11.1.2.3", 22, NULL, NULL);
  assert_address_allowed(lan, NULL, "fd12::1", 5432, NULL, NULL);
  assert_address_refused(lan, NULL, "fd12::1", 443, NULL, NULL, "unique-local");
  assert_address_refused(lan, NULL, "fc12::1", 5432, NULL, NULL, "unique-local");
  assert_address_refused(lan, NULL, "172.16.0.1", 443, NULL, NULL, "private");
  assert_address_refused(lan, NULL, "169.254.169.254", 80, NULL, NULL, "link-local");
}

static void test_check_address_public(void) {
  g_autoptr(HutchEgressPolicy) policy = policy_of(HUTCH_EGRESS_PUBLIC, NULL, NULL);
  static const char *const addresses[] = {"93.184.216.34", "8.8.8.8", "1.1.1.1",
                                          "2606:2800:220:1:248:1893:25c8:1946",
                                          "::ffff:93.184.216.34"};
  for (gsize i = 0; i < G_N_ELEMENTS(addresses); i++) {
    assert_address_allowed(policy, NULL, addresses[i], 443, NULL, NULL);
    assert_address_allowed(policy, NULL, addresses[i], 22, NULL, NULL);
    assert_address_allowed(policy, "example.com", addresses[i], 8080, NULL, NULL);
  }
}

static void test_check_address_allowlist(void) {
  g_autoptr(HutchEgressPolicy) empty = policy_of(HUTCH_EGRESS_ALLOWLIST, NULL, NULL);
  /* bare and not listed: refused, the reason names address and port */
  assert_address_refused(empty, NULL, "93.184.216.34", 443, NULL, NULL,
                         "93.184.216.34:443 is not in the allowlist");
  assert_address_refused(empty, NULL, "2606:2800:220:1:248:1893:25c8:1946", 443, NULL, NULL,
                         "not in the allowlist");
  /* the address of a name the allowlist admitted (check_name decided the name) */
  assert_address_allowed(empty, "example.com", "93.184.216.34", 443, NULL, NULL);

  g_autoptr(HutchEgressPolicy) listed = policy_of(
      HUTCH_EGRESS_ALLOWLIST,
      (const char *const[]){"93.184.216.0/24", "[2606:2800::/32]:*", "8.8.8.8:853", NULL}, NULL);
  assert_address_allowed(listed, NULL, "93.184.216.34", 443, NULL, NULL);
  assert_address_allowed(listed, NULL, "93.184.216.1", 80, NULL, NULL);
  assert_address_refused(listed, NULL, "93.184.216.34", 22, NULL, NULL, "not in the allowlist");
  assert_address_refused(listed, NULL, "93.184.217.34", 443, NULL, NULL, "not in the allowlist");
  assert_address_allowed(listed, NULL, "2606:2800:220:1:248:1893:25c8:1946", 22, NULL, NULL);
  assert_address_refused(listed, NULL, "2606:2801::1", 443, NULL, NULL, "not in the allowlist");
  assert_address_allowed(listed, NULL, "8.8.8.8", 853, NULL, NULL);
  assert_address_refused(listed, NULL, "8.8.8.8", 443, NULL, NULL, "8.8.8.8:443");
  assert_address_refused(listed, NULL, "8.8.4.4", 853, NULL, NULL, NULL);
  /* an IPv4 rule does not match an IPv6 address, nor the other way */
  assert_address_refused(listed, NULL, "2001:4860:4860::8888", 443, NULL, NULL, NULL);
}

static void test_check_address_deny_wins(void) {
  g_autoptr(GPtrArray) outside = inet_addresses((const char *const[]){"93.184.216.34", NULL});
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST,
                                          HUTCH_EGRESS_UNRESTRICTED};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) policy =
        policy_of(modes[m], (const char *const[]){"93.184.216.34:*", "[2606:2800::/32]:*", NULL},
                  (const char *const[]){"93.184.216.0/24:*", "[2606:2800:220::/48]", NULL});
    assert_address_refused(policy, "example.com", "93.184.216.34", 443, NULL, NULL,
                           "93.184.216.34 (the address of example.com) denied by rule "
                           "'93.184.216.0/24:*'");
    assert_address_refused(policy, NULL, "93.184.216.34", 22, NULL, NULL,
                           "denied by rule '93.184.216.0/24:*'");
    /* deny wins over the tests' outside list too */
    assert_address_refused(policy, NULL, "93.184.216.34", 22, NULL, outside, "denied by rule");
    assert_address_refused(policy, NULL, "2606:2800:220:1::1", 443, NULL, NULL,
                           "denied by rule '[2606:2800:220::/48]'");
    /* a deny address rule without a port is for every port */
    assert_address_refused(policy, NULL, "2606:2800:220:1::1", 22, NULL, NULL,
                           "denied by rule '[2606:2800:220::/48]'");
    assert_address_allowed(policy, NULL, "2606:2800:221::1", 443, NULL, NULL);
  }
}

static void test_check_address_outside(void) {
  g_autoptr(GPtrArray) outside = inet_addresses((const char *const[]){"10.0.2.2", "fd00::5", NULL});
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) policy = policy_of(modes[m], NULL, NULL);
    /* a bare address: the allowlist still decides (in public, any outside one goes) */
    if (modes[m] == HUTCH_EGRESS_PUBLIC)
      assert_address_allowed(policy, NULL, "10.0.2.2", 8080, NULL, outside);
    else
      assert_address_refused(policy, NULL, "10.0.2.2", 8080, NULL, outside, "not in the allowlist");
    assert_address_allowed(policy, "server.test", "fd00::5", 443, NULL, outside);
    /* only the listed addresses */
    assert_address_refused(policy, NULL, "10.0.2.3", 8080, NULL, outside, "private");
    assert_address_refused(policy, NULL, "fd00::6", 443, NULL, outside, "unique-local");
    /* an outside address that is also the host's is taken as outside */
    g_autoptr(GPtrArray) host = inet_addresses((const char *const[]){"10.0.2.2", NULL});
    assert_address_allowed(policy, "server.test", "10.0.2.2", 8080, host, outside);
    assert_address_refused(policy, NULL, "10.0.2.2", 8080, host, NULL, "address of the host");
  }
}

/* The guest's resolver may ask for a name in any case and with a final dot: "EVIL.com." is
 * evil.com, for deny as for allow (check_name matched only the exact lower-case text, so a
 * deny rule was passed by "EVIL.com" or "evil.com."). */
static void test_check_name_case_and_final_dot(void) {
  g_autoptr(HutchEgressPolicy) pub = policy_of(
      HUTCH_EGRESS_PUBLIC, NULL, (const char *const[]){"evil.com", "*.tracker.net:*", NULL});
  static const char *const evil[] = {"EVIL.com", "evil.com.", "Evil.Com.", "EVIL.COM"};
  for (gsize i = 0; i < G_N_ELEMENTS(evil); i++)
    assert_name_refused(pub, evil[i], 443, "denied by rule 'evil.com'");
  assert_name_refused(pub, "Ads.TRACKER.net.", 22, "denied by rule '*.tracker.net:*'");
  assert_name_refused(pub, "tracker.net.", 22, "denied by rule '*.tracker.net:*'");
  assert_name_allowed(pub, "notevil.com.", 443);

  g_autoptr(HutchEgressPolicy) list =
      policy_of(HUTCH_EGRESS_ALLOWLIST,
                (const char *const[]){"registry.npmjs.org", "*.pypi.org", NULL}, NULL);
  assert_name_allowed(list, "Registry.NPMJS.org.", 443);
  assert_name_allowed(list, "FILES.pypi.org.", 443);
  assert_name_allowed(list, "pypi.org.", 443);
  /* one final dot only, and the name stays a whole label match */
  assert_name_refused(list, "registry.npmjs.org..", 443, NULL);
  assert_name_refused(list, "EVILpypi.org.", 443, NULL);
}

/* An IPv4 address asked for in its v4-mapped IPv6 form (::ffff:a.b.c.d, from the guest or
 * from an AAAA record) is the same destination: an IPv4 deny rule and the host's IPv4
 * addresses applied to it (they did not: only its class was checked, so a deny of a public
 * address or the host's public address could be reached this way). */
static void test_check_address_v4_mapped(void) {
  g_autoptr(GPtrArray) host = inet_addresses((const char *const[]){"81.2.69.142", NULL});
  g_autoptr(GPtrArray) outside = inet_addresses((const char *const[]){"10.0.2.2", NULL});
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) policy =
        policy_of(modes[m], (const char *const[]){"10.0.0.0/8:*", "198.51.100.7", NULL},
                  (const char *const[]){"93.184.216.0/24:*", NULL});
    assert_address_refused(policy, "example.com", "::ffff:93.184.216.34", 443, host, NULL,
                           "::ffff:93.184.216.34 (the address of example.com) denied by rule "
                           "'93.184.216.0/24:*'");
    assert_address_refused(policy, "me.example", "::ffff:81.2.69.142", 443, host, NULL,
                           "address of the host");
    /* allow rules and the outside list read it as IPv4 too */
    assert_address_allowed(policy, NULL, "::ffff:10.1.2.3", 5432, host, NULL);
    assert_address_allowed(policy, NULL, "::ffff:10.9.9.9", 443, host, NULL);
    assert_address_refused(policy, NULL, "::ffff:172.16.0.7", 22, host, NULL, "private");
    assert_address_allowed(policy, NULL, "::ffff:10.0.2.2", 80, NULL, outside);
  }
  g_autoptr(HutchEgressPolicy) list =
      policy_of(HUTCH_EGRESS_ALLOWLIST, (const char *const[]){"93.184.216.34", NULL}, NULL);
  assert_address_allowed(list, NULL, "::ffff:93.184.216.34", 443, NULL, NULL);
  assert_address_refused(list, NULL, "::ffff:8.8.8.8", 443, NULL, NULL, "not in the allowlist");
}

/* On Linux a connection to 0.0.0.0 or :: (or ::ffff:0.0.0.0) reaches the host's loopback:
 * like loopback, no allow rule opens them ("0.0.0.0/0:*" or "[::/0]:*" did). */
static void test_check_address_unspecified(void) {
  static const char *const unspecified[] = {"0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"};
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_ALLOWLIST};
  for (gsize m = 0; m < G_N_ELEMENTS(modes); m++) {
    g_autoptr(HutchEgressPolicy) policy = policy_of(
        modes[m], (const char *const[]){"0.0.0.0/0:*", "[::/0]:*", "0.0.0.0:*", "[::]:*", NULL},
        NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(unspecified); i++) {
      assert_address_refused(policy, NULL, unspecified[i], 443, NULL, NULL, "loopback");
      assert_address_refused(policy, "zero.example", unspecified[i], 8080, NULL, NULL, "loopback");
    }
    /* the ranges still open the rest */
    assert_address_allowed(policy, NULL, "10.0.0.1", 8080, NULL, NULL);
    assert_address_allowed(policy, NULL, "fd00::1", 8080, NULL, NULL);
  }
}

/* A "mode" that is not a string is a clean error (an array or object made json-glib emit a
 * critical, a number was reported as "unknown mode '(null)'"). */
static void test_policy_from_json_mode_type(void) {
  static const char *const cases[] = {
      "{\"mode\": 5}",
      "{\"mode\": true}",
      "{\"mode\": null}",
      "{\"mode\": []}",
      "{\"mode\": {\"public\": 1}}",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_from_json(cases[i], &error);
    if (policy)
      g_error("%s: read, expected an error", cases[i]);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
    assert_contains(error->message, "'mode' is not a string");
  }
}

/* ---- Address classes ------------------------------------------------------------------ */

static void assert_class(const char *address, const char *want) {
  struct sockaddr_storage ss;
  const char *got = hutch_egress_address_class(sockaddr_of(&ss, address));
  if (g_strcmp0(got, want) != 0)
    g_error("class of %s: '%s', expected '%s'", address, got ? got : "(public)",
            want ? want : "(public)");
}

static void test_address_class_ipv4(void) {
  static const struct {
    const char *address;
    const char *class; /* NULL: public */
  } cases[] = {
      {"0.0.0.0", "unspecified"},
      {"0.255.255.255", "unspecified"},
      {"1.0.0.0", NULL},
      {"9.255.255.255", NULL},
      {"10.0.0.0", "private"},
      {"10.255.255.255", "private"},
      {"11.0.0.0", NULL},
      {"100.63.255.255", NULL},
      {"100.64.0.0", "shared (CGNAT)"},
      {"100.127.255.255", "shared (CGNAT)"},
      {"100.128.0.0", NULL},
      {"126.255.255.255", NULL},
      {"127.0.0.0", "loopback"},
      {"127.0.0.1", "loopback"},
      {"127.255.255.255", "loopback"},
      {"128.0.0.0", NULL},
      {"169.253.255.255", NULL},
      {"169.254.0.0", "link-local"},
      {"169.254.169.254", "link-local"},
      {"169.254.255.255", "link-local"},
      {"169.255.0.0", NULL},
      {"172.15.255.255", NULL},
      {"172.16.0.0", "private"},
      {"172.31.255.255", "private"},
      {"172.32.0.0", NULL},
      {"191.255.255.255", NULL},
      {"192.0.0.0", "reserved"},
      {"192.0.0.255", "reserved"},
      {"192.0.1.0", NULL},
      {"192.0.2.0", NULL}, /* documentation: not refused */
      {"192.0.2.255", NULL}, /* documentation: not refused */
      {"192.0.3.0", NULL},
      {"192.167.255.255", NULL},
      {"192.168.0.0", "private"},
      {"192.168.255.255", "private"},
      {"192.169.0.0", NULL},
      {"198.17.255.255", NULL},
      {"198.18.0.0", "reserved"},
      {"198.19.255.255", "reserved"},
      {"198.20.0.0", NULL},
      {"198.51.99.255", NULL},
      {"198.51.100.0", NULL}, /* documentation: not refused */
      {"198.51.100.255", NULL}, /* documentation: not refused */
      {"198.51.101.0", NULL},
      {"203.0.112.255", NULL},
      {"203.0.113.0", NULL}, /* documentation: not refused */
      {"203.0.113.255", NULL}, /* documentation: not refused */
      {"203.0.114.0", NULL},
      {"223.255.255.255", NULL},
      {"224.0.0.0", "multicast"},
      {"239.255.255.255", "multicast"},
      {"240.0.0.0", "reserved"},
      {"255.255.255.255", "reserved"},
      {"93.184.216.34", NULL},
      {"8.8.8.8", NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    assert_class(cases[i].address, cases[i].class);
}

static void test_address_class_ipv6(void) {
  static const struct {
    const char *address;
    const char *class;
  } cases[] = {
      {"::", "unspecified"},
      {"::1", "loopback"},
      {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
      {"fc00::", "unique-local"},
      {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"},
      {"fe00::", NULL},
      {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
      {"fe80::", "link-local"},
      {"fe80::1", "link-local"},
      {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"},
      {"fec0::", "site-local"},
      {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local"},
      {"::127.0.0.1", "reserved"},
      {"::1:0:0:1", NULL},
      {"64:ff9b::a00:1", "reserved"},
      {"64:ff9b:1::1", "reserved"},
      {"2002:a00:1::1", "reserved"},
      {"2001:0:1::1", "reserved"},
      {"2001:1::1", NULL},
      {"ff00::", "multicast"},
      {"ff02::1", "multicast"},
      {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"},
      {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
      {"2001:db8::", "reserved"},
      {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"},
      {"2001:db9::", NULL},
      {"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
      {"100::", "reserved"},
      {"100::ffff:ffff:ffff:ffff", "reserved"},
      {"100:0:0:1::", NULL},
      {"::ffff:127.0.0.1", "loopback"},
      {"::ffff:10.0.0.1", "private"},
      {"::ffff:172.16.0.1", "private"},
      {"::ffff:192.168.0.1", "private"},
      {"::ffff:100.64.0.1", "shared (CGNAT)"},
      {"::ffff:169.254.169.254", "link-local"},
      {"::ffff:0.0.0.0", "unspecified"},
      {"::ffff:224.0.0.1", "multicast"},
      {"::ffff:93.184.216.34", NULL},
      {"2606:2800:220:1:248:1893:25c8:1946", NULL},
      {"2001:4860:4860::8888", NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    assert_class(cases[i].address, cases[i].class);

  /* neither IPv4 nor IPv6: refused as reserved */
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  g_assert_cmpstr(hutch_egress_address_class((const struct sockaddr *)&un), ==, "reserved");
}

/* ---- The policy file ------------------------------------------------------------------ */

static void assert_texts(GPtrArray *rules, const char *const *want) {
  guint n = want ? g_strv_length((char **)want) : 0;
  g_assert_cmpuint(rules->len, ==, n);
  for (guint i = 0; i < n; i++)
    g_assert_cmpstr(((HutchEgressRule *)g_ptr_array_index(rules, i))->text, ==, want[i]);
}

static void test_policy_json_round_trip(void) {
  static const char *const allow[] = {"registry.npmjs.org", "*.pypi.org:*", "[2001:db8::/32]:443",
                                      "198.51.100.0/24:8080", NULL};
  static const char *const deny[] = {"evil.com", "[::1]", NULL};
  g_autoptr(HutchEgressPolicy) policy = policy_of(HUTCH_EGRESS_ALLOWLIST, allow, deny);
  g_autofree char *json = hutch_egress_policy_to_json(policy);
  g_assert_true(g_str_has_suffix(json, "}\n"));

  /* the document's shape, read with json-glib */
  g_autoptr(JsonParser) parser = json_parser_new();
  g_assert_true(json_parser_load_from_data(parser, json, -1, NULL));
  JsonObject *obj = json_node_get_object(json_parser_get_root(parser));
  g_assert_cmpstr(json_object_get_string_member(obj, "mode"), ==, "allowlist");
  JsonArray *a = json_object_get_array_member(obj, "allow");
  g_assert_cmpuint(json_array_get_length(a), ==, 4);
  g_assert_cmpstr(json_array_get_string_element(a, 2), ==, "[2001:db8::/32]:443");
  JsonArray *d = json_object_get_array_member(obj, "deny");
  g_assert_cmpuint(json_array_get_length(d), ==, 2);
  g_assert_cmpstr(json_array_get_string_element(d, 0), ==, "evil.com");

  g_autoptr(GError) error = NULL;
  g_autoptr(HutchEgressPolicy) back = hutch_egress_policy_from_json(json, &error);
  g_assert_no_error(error);
  g_assert_cmpint(back->mode, ==, HUTCH_EGRESS_ALLOWLIST);
  assert_texts(back->allow, allow);
  assert_texts(back->deny, deny);
  /* the rules are parsed, not only kept as text */
  HutchEgressRule *wild = g_ptr_array_index(back->allow, 1);
  g_assert_true(wild->wildcard);
  g_assert_cmpuint(wild->port, ==, HUTCH_EGRESS_ANY_PORT);
  g_autofree char *again = hutch_egress_policy_to_json(back);
  g_assert_cmpstr(again, ==, json);

  /* every mode one may ask for, with empty lists */
  static const HutchEgressMode modes[] = {HUTCH_EGRESS_NONE, HUTCH_EGRESS_ALLOWLIST,
                                          HUTCH_EGRESS_PUBLIC, HUTCH_EGRESS_UNRESTRICTED};
  for (gsize i = 0; i < G_N_ELEMENTS(modes); i++) {
    g_autoptr(HutchEgressPolicy) p = hutch_egress_policy_new(modes[i]);
    g_autofree char *text = hutch_egress_policy_to_json(p);
    g_autoptr(HutchEgressPolicy) q = hutch_egress_policy_from_json(text, &error);
    g_assert_no_error(error);
    g_assert_cmpint(q->mode, ==, modes[i]);
    g_assert_cmpuint(q->allow->len, ==, 0);
    g_assert_cmpuint(q->deny->len, ==, 0);
  }

  /* lists may be left out; a text in both ends in deny (read last), once */
  g_autoptr(HutchEgressPolicy) short_form =
      hutch_egress_policy_from_json("{\"mode\": \"public\"}", &error);
  g_assert_no_error(error);
  g_assert_cmpint(short_form->mode, ==, HUTCH_EGRESS_PUBLIC);
  g_assert_cmpuint(short_form->allow->len + short_form->deny->len, ==, 0);
  g_autoptr(HutchEgressPolicy) overlap = hutch_egress_policy_from_json(
      "{\"mode\": \"allowlist\", \"allow\": [\"a.com\", \"A.com\", \"b.com\"],"
      " \"deny\": [\"a.com\"]}",
      &error);
  g_assert_no_error(error);
  assert_texts(overlap->allow, (const char *const[]){"b.com", NULL});
  assert_texts(overlap->deny, (const char *const[]){"a.com", NULL});
}

static void test_policy_from_json_errors(void) {
  static const struct {
    const char *json;
    GQuark domain; /* 0: HUTCH_ERROR */
    int code;
    const char *part;
  } cases[] = {
      {"{\"mode\": \"sometimes\"}", 0, HUTCH_ERROR_FAILED, "unknown mode 'sometimes'"},
      {"{\"mode\": \"unset\"}", 0, HUTCH_ERROR_FAILED, "unknown mode 'unset'"},
      {"{\"mode\": \"Public\"}", 0, HUTCH_ERROR_FAILED, "unknown mode 'Public'"},
      {"{\"allow\": []}", 0, HUTCH_ERROR_FAILED, "unknown mode ''"},
      {"{\"mode\": \"public\", \"allow\": \"a.com\"}", 0, HUTCH_ERROR_FAILED,
       "'allow' is not a list"},
      {"{\"mode\": \"public\", \"deny\": {\"a\": 1}}", 0, HUTCH_ERROR_FAILED,
       "'deny' is not a list"},
      {"{\"mode\": \"public\", \"allow\": null}", 0, HUTCH_ERROR_FAILED, "'allow' is not a list"},
      {"{\"mode\": \"public\", \"allow\": [5]}", 0, HUTCH_ERROR_FAILED,
       "'allow' holds a non-string"},
      {"{\"mode\": \"public\", \"deny\": [null]}", 0, HUTCH_ERROR_FAILED,
       "'deny' holds a non-string"},
      {"{\"mode\": \"public\", \"allow\": [[\"a.com\"]]}", 0, HUTCH_ERROR_FAILED,
       "'allow' holds a non-string"},
      {"{\"mode\": \"public\", \"allow\": [\"a..b\"]}", 0, HUTCH_ERROR_USAGE, "'a..b'"},
      {"{\"mode\": \"public\", \"deny\": [\"ok.com\", \"2001:db8::1\"]}", 0, HUTCH_ERROR_USAGE,
       "'2001:db8::1'"},
      {"[]", 0, HUTCH_ERROR_FAILED, "not a JSON object"},
      {"\"public\"", 0, HUTCH_ERROR_FAILED, "not a JSON object"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_from_json(cases[i].json, &error);
    if (policy)
      g_error("%s: read, expected an error", cases[i].json);
    g_assert_error(error, cases[i].domain ? cases[i].domain : HUTCH_ERROR, cases[i].code);
    assert_contains(error->message, cases[i].part);
  }
  /* not JSON at all: the parser's error */
  static const char *const broken[] = {"", "{", "{\"mode\": public}", "mode: public"};
  for (gsize i = 0; i < G_N_ELEMENTS(broken); i++) {
    g_autoptr(GError) error = NULL;
    g_assert_null(hutch_egress_policy_from_json(broken[i], &error));
    g_assert_nonnull(error);
  }
}

static void test_policy_add(void) {
  g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_new(HUTCH_EGRESS_ALLOWLIST);
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_egress_policy_add(policy, FALSE, "Example.com", &error));
  g_assert_true(hutch_egress_policy_add(policy, FALSE, "b.com:22", &error));
  g_assert_no_error(error);
  assert_texts(policy->allow, (const char *const[]){"example.com", "b.com:22", NULL});
  /* the same text again (in any case): not added twice */
  g_assert_true(hutch_egress_policy_add(policy, FALSE, "example.com", &error));
  g_assert_true(hutch_egress_policy_add(policy, FALSE, "EXAMPLE.COM", &error));
  g_assert_cmpuint(policy->allow->len, ==, 2);
  g_assert_cmpuint(policy->deny->len, ==, 0);
  /* into deny: out of allow */
  g_assert_true(hutch_egress_policy_add(policy, TRUE, "EXAMPLE.com", &error));
  assert_texts(policy->allow, (const char *const[]){"b.com:22", NULL});
  assert_texts(policy->deny, (const char *const[]){"example.com", NULL});
  g_autofree char *reason = name_decision(policy, "example.com", 443);
  assert_contains(reason, "denied by rule 'example.com'");
  g_assert_true(hutch_egress_policy_add(policy, TRUE, "example.com", &error));
  g_assert_cmpuint(policy->deny->len, ==, 1);
  /* and back */
  g_assert_true(hutch_egress_policy_add(policy, FALSE, "example.com", &error));
  g_assert_no_error(error);
  assert_texts(policy->allow, (const char *const[]){"b.com:22", "example.com", NULL});
  g_assert_cmpuint(policy->deny->len, ==, 0);
  assert_name_allowed(policy, "example.com", 443);
  /* a different text for another destination stays: b.com:22 is not b.com */
  g_assert_true(hutch_egress_policy_add(policy, TRUE, "b.com", &error));
  assert_texts(policy->allow, (const char *const[]){"b.com:22", "example.com", NULL});
  assert_texts(policy->deny, (const char *const[]){"b.com", NULL});
  /* a bad text: an error, both lists as they were */
  g_assert_false(hutch_egress_policy_add(policy, TRUE, "a..b", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  assert_contains(error->message, "'a..b'");
  g_clear_error(&error);
  g_assert_false(hutch_egress_policy_add(policy, FALSE, "", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  assert_texts(policy->allow, (const char *const[]){"b.com:22", "example.com", NULL});
  assert_texts(policy->deny, (const char *const[]){"b.com", NULL});
}

static void test_policy_save_load(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-egress-XXXXXX", NULL);
  g_assert_nonnull(dir);
  g_autofree char *path = g_build_filename(dir, HUTCH_EGRESS_POLICY_FILE, NULL);
  /* an older file, readable by all, is replaced by one for the owner only */
  g_assert_true(g_file_set_contents(path, "{}", -1, NULL));
  g_assert_cmpint(g_chmod(path, 0644), ==, 0);

  g_autoptr(HutchEgressPolicy) policy =
      policy_of(HUTCH_EGRESS_PUBLIC, (const char *const[]){"10.0.0.0/8:*", NULL},
                (const char *const[]){"*.evil.com:*", NULL});
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_egress_policy_save(policy, dir, &error));
  g_assert_no_error(error);
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0600);
  g_assert_true(S_ISREG(st.st_mode));
  /* nothing else left in the directory (no temporary file) */
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  g_assert_cmpstr(g_dir_read_name(d), ==, HUTCH_EGRESS_POLICY_FILE);
  g_assert_null(g_dir_read_name(d));

  g_autoptr(HutchEgressPolicy) back = hutch_egress_policy_load(dir, &error);
  g_assert_no_error(error);
  g_assert_cmpint(back->mode, ==, HUTCH_EGRESS_PUBLIC);
  assert_texts(back->allow, (const char *const[]){"10.0.0.0/8:*", NULL});
  assert_texts(back->deny, (const char *const[]){"*.evil.com:*", NULL});
  g_autofree char *saved = NULL;
  g_assert_true(g_file_get_contents(path, &saved, NULL, NULL));
  g_autofree char *json = hutch_egress_policy_to_json(policy);
  g_assert_cmpstr(saved, ==, json);

  /* a broken file: the error names it */
  g_assert_true(g_file_set_contents(path, "{\"mode\": \"sometimes\"}", -1, NULL));
  g_assert_null(hutch_egress_policy_load(dir, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
  assert_contains(error->message, path);
  assert_contains(error->message, "sometimes");
  g_clear_error(&error);
  hutch_rmtree(dir, NULL);
}

static void test_policy_load_missing(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-egress-XXXXXX", NULL);
  g_assert_nonnull(dir);
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_egress_policy_load(dir, &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  g_clear_error(&error);
  g_autofree char *gone = g_build_filename(dir, "no-such-instance", NULL);
  g_assert_null(hutch_egress_policy_load(gone, &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  hutch_rmtree(dir, NULL);
}

/* ---- The helper's DNS answers ---- */

/* A query with one question for name (dotted), type qtype, class IN, ID 0x1234, RD */
static GByteArray *dns_query(const char *name, guint qtype) {
  GByteArray *q = g_byte_array_new();
  const guint8 header[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  g_byte_array_append(q, header, sizeof header);
  g_auto(GStrv) labels = g_strsplit(name, ".", -1);
  for (char **l = labels; *l; l++) {
    guint8 n = (guint8)strlen(*l);
    g_byte_array_append(q, &n, 1);
    g_byte_array_append(q, (const guint8 *)*l, n);
  }
  const guint8 tail[] = {0, (guint8)(qtype >> 8), (guint8)qtype, 0, 1};
  g_byte_array_append(q, tail, sizeof tail);
  return q;
}

static guint32 dns_test_address(const char *name, gpointer data) {
  g_ptr_array_add(data, g_strdup(name));
  return 0xc6120005u;
}

static void test_dns_answer_a(void) {
  g_autoptr(GPtrArray) asked = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GByteArray) q = dns_query("Api.Example.COM", 1);
  guint8 out[1500];
  gsize n = hutch_dns_answer(q->data, q->len, out, sizeof out, dns_test_address, asked);
  /* the question as asked, then one answer: a pointer to it, A, IN, TTL 60, 198.18.0.5 */
  g_assert_cmpuint(n, ==, q->len + 16);
  g_assert_cmpuint(asked->len, ==, 1);
  g_assert_cmpstr(asked->pdata[0], ==, "api.example.com");
  g_assert_cmpint(out[0], ==, 0x12);
  g_assert_cmpint(out[1], ==, 0x34);
  g_assert_cmpint(out[2], ==, 0x80 | 0x04 | 0x01); /* QR, AA, RD as asked */
  g_assert_cmpint(out[3] & 0x0f, ==, 0);           /* NOERROR */
  g_assert_cmpint(out[7], ==, 1);                  /* one answer */
  g_assert_cmpmem(out + 12, q->len - 12, q->data + 12, q->len - 12);
  const guint8 answer[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 0, 5};
  g_assert_cmpmem(out + q->len, 16, answer, sizeof answer);
}

static void test_dns_answer_no_data(void) {
  g_autoptr(GPtrArray) asked = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GByteArray) q = dns_query("example.com", 28); /* AAAA: the guest has no IPv6 */
  guint8 out[1500];
  gsize n = hutch_dns_answer(q->data, q->len, out, sizeof out, dns_test_address, asked);
  g_assert_cmpuint(n, ==, q->len);
  g_assert_cmpuint(asked->len, ==, 0);
  g_assert_cmpint(out[3] & 0x0f, ==, 0);
  g_assert_cmpint(out[6] << 8 | out[7], ==, 0);
}

static void test_dns_answer_refused(void) {
  g_autoptr(GPtrArray) asked = g_ptr_array_new_with_free_func(g_free);
  guint8 out[1500];
  /* a compressed name (a pointer where a label should be): FORMERR, header only */
  const guint8 pointer[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1};
  gsize n = hutch_dns_answer(pointer, sizeof pointer, out, sizeof out, dns_test_address, asked);
  g_assert_cmpuint(n, ==, 12);
  g_assert_cmpint(out[3] & 0x0f, ==, 1);
  g_assert_cmpint(out[4] << 8 | out[5], ==, 0);
  /* a name with a byte no host name has */
  g_autoptr(GByteArray) bad = dns_query("a b.example", 1);
  n = hutch_dns_answer(bad->data, bad->len, out, sizeof out, dns_test_address, asked);
  g_assert_cmpuint(n, ==, 12);
  g_assert_cmpint(out[3] & 0x0f, ==, 1);
  /* no answer at all: two questions, a response, a header cut short, no room */
  g_autoptr(GByteArray) two = dns_query("example.com", 1);
  two->data[5] = 2;
  g_assert_cmpuint(hutch_dns_answer(two->data, two->len, out, sizeof out, dns_test_address, asked),
                   ==, 0);
  g_autoptr(GByteArray) response = dns_query("example.com", 1);
  response->data[2] |= 0x80;
  g_assert_cmpuint(
      hutch_dns_answer(response->data, response->len, out, sizeof out, dns_test_address, asked), ==,
      0);
  g_assert_cmpuint(hutch_dns_answer(pointer, 11, out, sizeof out, dns_test_address, asked), ==, 0);
  g_autoptr(GByteArray) fits_not = dns_query("example.com", 1);
  g_assert_cmpuint(hutch_dns_answer(fits_not->data, fits_not->len, out, fits_not->len + 15,
                                    dns_test_address, asked),
                   ==, 0);
  g_assert_cmpuint(asked->len, ==, 0);
}

/* A helper that cannot start (here: the instance has no policy file) returns 1 with the
 * error set. This path once jumped past a cleanup variable's initialisation, so that its
 * cleanup freed whatever that stack slot held: GCC compiles such a jump, and here the slot
 * happened to hold NULL, so this test did not see it; clang refuses it (tests/fuzz/run.sh
 * builds the library with clang). */
static void test_helper_no_policy(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-egress-XXXXXX", NULL);
  g_assert_nonnull(dir);
  g_autoptr(GError) error = NULL;
  char *forwards[] = {NULL};
  char *passt_argv[] = {"passt", NULL};
  int status = hutch_egress_helper_main(dir, dir, forwards, passt_argv, &error);
  g_assert_cmpint(status, ==, 1);
  g_assert_nonnull(error);
  g_assert_cmpint(g_rmdir(dir), ==, 0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/egress/mode/strings", test_mode_strings);
  g_test_add_func("/egress/dns/a", test_dns_answer_a);
  g_test_add_func("/egress/dns/no-data", test_dns_answer_no_data);
  g_test_add_func("/egress/dns/refused", test_dns_answer_refused);
  g_test_add_func("/egress/helper/no-policy", test_helper_no_policy);
  g_test_add_func("/egress/rule/names", test_rule_names);
  g_test_add_func("/egress/rule/normalised", test_rule_normalised);
  g_test_add_func("/egress/rule/ipv4", test_rule_ipv4);
  g_test_add_func("/egress/rule/ipv6", test_rule_ipv6);
  g_test_add_func("/egress/rule/bad", test_rule_bad);
  g_test_add_func("/egress/match/default-ports", test_match_default_ports);
  g_test_add_func("/egress/match/wildcard", test_match_wildcard);
  g_test_add_func("/egress/check-name/none", test_check_name_none);
  g_test_add_func("/egress/check-name/allowlist", test_check_name_allowlist);
  g_test_add_func("/egress/check-name/public", test_check_name_public);
  g_test_add_func("/egress/check-name/deny-wins", test_check_name_deny_wins);
  g_test_add_func("/egress/check-name/port-53", test_check_name_port_53);
  g_test_add_func("/egress/check-name/case-and-final-dot", test_check_name_case_and_final_dot);
  g_test_add_func("/egress/check-address/none", test_check_address_none);
  g_test_add_func("/egress/check-address/loopback", test_check_address_loopback);
  g_test_add_func("/egress/check-address/host", test_check_address_host);
  g_test_add_func("/egress/check-address/special", test_check_address_special);
  g_test_add_func("/egress/check-address/public", test_check_address_public);
  g_test_add_func("/egress/check-address/allowlist", test_check_address_allowlist);
  g_test_add_func("/egress/check-address/deny-wins", test_check_address_deny_wins);
  g_test_add_func("/egress/check-address/outside", test_check_address_outside);
  g_test_add_func("/egress/check-address/v4-mapped", test_check_address_v4_mapped);
  g_test_add_func("/egress/check-address/unspecified", test_check_address_unspecified);
  g_test_add_func("/egress/address-class/ipv4", test_address_class_ipv4);
  g_test_add_func("/egress/address-class/ipv6", test_address_class_ipv6);
  g_test_add_func("/egress/policy/json-round-trip", test_policy_json_round_trip);
  g_test_add_func("/egress/policy/from-json-errors", test_policy_from_json_errors);
  g_test_add_func("/egress/policy/from-json-mode-type", test_policy_from_json_mode_type);
  g_test_add_func("/egress/policy/add", test_policy_add);
  g_test_add_func("/egress/policy/save-load", test_policy_save_load);
  g_test_add_func("/egress/policy/load-missing", test_policy_load_missing);
  return g_test_run();
}
