/* egress.c: the network policy's rules and decisions (pure; see egress-private.h). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <json-glib/json-glib.h>
#include <netinet/in.h>
#include <string.h>

#include "egress-private.h"
#include "util-private.h"

static const char *const mode_names[HUTCH_EGRESS_N] = {
    [HUTCH_EGRESS_UNSET] = "unset",
    [HUTCH_EGRESS_NONE] = "none",
    [HUTCH_EGRESS_ALLOWLIST] = "allowlist",
    [HUTCH_EGRESS_PUBLIC] = "public",
    [HUTCH_EGRESS_UNRESTRICTED] = "unrestricted",
};

const char *hutch_egress_mode_to_string(HutchEgressMode mode) {
  return mode < HUTCH_EGRESS_N ? mode_names[mode] : "unset";
}

gboolean hutch_egress_mode_from_string(const char *text, HutchEgressMode *ret) {
  for (int i = HUTCH_EGRESS_NONE; i < HUTCH_EGRESS_N; i++)
    if (text && strcmp(text, mode_names[i]) == 0) {
      *ret = i;
      return TRUE;
    }
  return FALSE;
}

/* ---- Rules ---------------------------------------------------------------------------- */

void hutch_egress_rule_free(HutchEgressRule *rule) {
  if (!rule)
    return;
  g_free(rule->text);
  g_free(rule->name);
  g_free(rule);
}

/* A DNS name as a rule may name it: labels of letters, digits, '-' and '_' (1-63 bytes, no
 * '-' at either end), at least one label, at most 253 bytes. */
static gboolean is_dns_name(const char *name) {
  gsize len = strlen(name);
  if (len == 0 || len > 253)
    return FALSE;
  g_auto(GStrv) labels = g_strsplit(name, ".", -1);
  for (char **l = labels; *l; l++) {
    gsize n = strlen(*l);
    if (n == 0 || n > 63 || (*l)[0] == '-' || (*l)[n - 1] == '-')
      return FALSE;
    for (const char *c = *l; *c; c++)
      if (!g_ascii_isalnum(*c) && *c != '-' && *c != '_')
        return FALSE;
  }
  return TRUE;
}

static gboolean parse_port(const char *text, guint *ret) {
  if (strcmp(text, "*") == 0) {
    *ret = HUTCH_EGRESS_ANY_PORT;
    return TRUE;
  }
  guint64 value = 0;
  if (!g_ascii_string_to_unsigned(text, 10, 1, 65535, &value, NULL))
    return FALSE;
  *ret = (guint)value;
  return TRUE;
}

/* ADDR[/PREFIX] into rule (family, addr masked to the prefix, prefix) */
static gboolean parse_range(const char *text, int family, HutchEgressRule *rule) {
  g_autofree char *addr = g_strdup(text);
  char *slash = strchr(addr, '/');
  guint max = family == AF_INET ? 32 : 128;
  guint prefix = max;
  if (slash) {
    *slash = '\0';
    guint64 value = 0;
    if (!g_ascii_string_to_unsigned(slash + 1, 10, 0, max, &value, NULL))
      return FALSE;
    prefix = (guint)value;
  }
  if (inet_pton(family, addr, rule->addr) != 1)
    return FALSE;
  guint bytes = family == AF_INET ? 4 : 16;
  for (guint i = 0; i < bytes; i++) {
    guint bits = prefix > i * 8 ? MIN(prefix - i * 8, 8) : 0;
    rule->addr[i] &= (guint8)(0xff00 >> bits);
  }
  rule->family = family;
  rule->prefix = prefix;
  return TRUE;
}

HutchEgressRule *hutch_egress_rule_parse(const char *text, GError **error) {
  g_autoptr(HutchEgressRule) rule = g_new0(HutchEgressRule, 1);
  g_autofree char *lower = g_ascii_strdown(text ? text : "", -1);
  rule->text = g_strdup(lower);
  const char *why = NULL;
  char *rest = lower;
  char *port = NULL;
  if (rest[0] == '[') {
    /* [IPv6[/PREFIX]][:PORT] */
    char *close = strchr(rest, ']');
    if (!close) {
      why = "an IPv6 address needs its closing ']'";
      goto fail;
    }
    *close = '\0';
    if (close[1] == ':')
      port = close + 2;
    else if (close[1] != '\0') {
      why = "only ':PORT' may follow ']'";
      goto fail;
    }
    if (port && !parse_port(port, &rule->port)) {
      why = "the port must be 1-65535 or '*'";
      goto fail;
    }
    if (!parse_range(rest + 1, AF_INET6, rule)) {
      why = "not an IPv6 address or range (ADDR or ADDR/PREFIX)";
      goto fail;
    }
    return g_steal_pointer(&rule);
  }
  char *colon = strchr(rest, ':');
  if (colon) {
    if (strchr(colon + 1, ':')) {
      why = "an IPv6 address goes in brackets: [2001:db8::/32]:443";
      goto fail;
    }
    *colon = '\0';
    port = colon + 1;
    if (!parse_port(port, &rule->port)) {
      why = "the port must be 1-65535 or '*'";
      goto fail;
    }
  }
  if (*rest && (g_ascii_isdigit(rest[strlen(rest) - 1]) || strchr(rest, '/')) &&
      strspn(rest, "0123456789./") == strlen(rest)) {
    if (!parse_range(rest, AF_INET, rule)) {
      why = "not an IPv4 address or range (ADDR or ADDR/PREFIX)";
      goto fail;
    }
    return g_steal_pointer(&rule);
  }
  if (g_str_has_prefix(rest, "*.")) {
    rule->wildcard = TRUE;
    rest += 2;
  }
  gsize len = strlen(rest);
  if (len > 0 && rest[len - 1] == '.')
    rest[len - 1] = '\0';
  if (!is_dns_name(rest)) {
    why = "not a name (letters, digits, '-' and '.'; '*.' only in front), an address or a "
          "range";
    goto fail;
  }
  rule->name = g_strdup(rest);
  return g_steal_pointer(&rule);

fail:
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "destination '%s': %s", text ? text : "",
              why);
  return NULL;
}

/* A rule without a port: ports 80 and 443 in allow, every port in deny (denying a name
 * means all of it) */
static gboolean port_matches(const HutchEgressRule *rule, guint port, gboolean deny) {
  if (rule->port == HUTCH_EGRESS_ANY_PORT || (deny && rule->port == 0))
    return TRUE;
  if (rule->port == 0)
    return port == 80 || port == 443;
  return rule->port == port;
}

/* name: lower case, no final dot */
static gboolean name_matches(const HutchEgressRule *rule, const char *name) {
  if (!rule->name || !name)
    return FALSE;
  if (strcmp(rule->name, name) == 0)
    return TRUE;
  if (!rule->wildcard)
    return FALSE;
  gsize n = strlen(name), r = strlen(rule->name);
  return n > r + 1 && name[n - r - 1] == '.' && strcmp(name + n - r, rule->name) == 0;
}

/* addr: the address's bytes (4 or 16) of family */
static gboolean range_matches(const HutchEgressRule *rule, int family, const guint8 *addr) {
  if (rule->name || rule->family != family)
    return FALSE;
  for (guint i = 0; i * 8 < rule->prefix; i++) {
    guint bits = MIN(rule->prefix - i * 8, 8);
    guint8 mask = (guint8)(0xff00 >> bits);
    if ((addr[i] & mask) != rule->addr[i])
      return FALSE;
  }
  return TRUE;
}

/* ---- Policies ------------------------------------------------------------------------- */

HutchEgressPolicy *hutch_egress_policy_new(HutchEgressMode mode) {
  HutchEgressPolicy *policy = g_new0(HutchEgressPolicy, 1);
  policy->mode = mode;
  policy->allow = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_egress_rule_free);
  policy->deny = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_egress_rule_free);
  return policy;
}

void hutch_egress_policy_free(HutchEgressPolicy *policy) {
  if (!policy)
    return;
  g_ptr_array_unref(policy->allow);
  g_ptr_array_unref(policy->deny);
  g_free(policy);
}

static void remove_text(GPtrArray *rules, const char *text) {
  for (guint i = rules->len; i > 0; i--) {
    HutchEgressRule *rule = g_ptr_array_index(rules, i - 1);
    if (strcmp(rule->text, text) == 0)
      g_ptr_array_remove_index(rules, i - 1);
  }
}

gboolean hutch_egress_policy_add(HutchEgressPolicy *policy, gboolean deny, const char *text,
                                 GError **error) {
  HutchEgressRule *rule = hutch_egress_rule_parse(text, error);
  if (!rule)
    return FALSE;
  remove_text(deny ? policy->allow : policy->deny, rule->text);
  remove_text(deny ? policy->deny : policy->allow, rule->text);
  g_ptr_array_add(deny ? policy->deny : policy->allow, rule);
  return TRUE;
}

JsonArray *hutch_egress_rules_to_json(GPtrArray *rules) {
  JsonArray *array = json_array_new();
  for (guint i = 0; i < rules->len; i++)
    json_array_add_string_element(array, ((HutchEgressRule *)g_ptr_array_index(rules, i))->text);
  return array;
}

static void add_rules(JsonBuilder *b, const char *member, GPtrArray *rules) {
  json_builder_set_member_name(b, member);
  json_builder_begin_array(b);
  for (guint i = 0; i < rules->len; i++)
    json_builder_add_string_value(b, ((HutchEgressRule *)g_ptr_array_index(rules, i))->text);
  json_builder_end_array(b);
}

char *hutch_egress_policy_to_json(const HutchEgressPolicy *policy) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "mode");
  json_builder_add_string_value(b, hutch_egress_mode_to_string(policy->mode));
  add_rules(b, "allow", policy->allow);
  add_rules(b, "deny", policy->deny);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, TRUE);
  json_generator_set_root(gen, root);
  char *text = json_generator_to_data(gen, NULL);
  char *with_newline = g_strconcat(text, "\n", NULL);
  g_free(text);
  return with_newline;
}

static gboolean read_rules(HutchEgressPolicy *policy, JsonObject *obj, const char *member,
                           GError **error) {
  if (!json_object_has_member(obj, member))
    return TRUE;
  JsonNode *node = json_object_get_member(obj, member);
  if (!JSON_NODE_HOLDS_ARRAY(node)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "'%s' is not a list", member);
    return FALSE;
  }
  JsonArray *array = json_node_get_array(node);
  for (guint i = 0; i < json_array_get_length(array); i++) {
    JsonNode *item = json_array_get_element(array, i);
    const char *text = JSON_NODE_HOLDS_VALUE(item) ? json_node_get_string(item) : NULL;
    if (!text) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "'%s' holds a non-string", member);
      return FALSE;
    }
    if (!hutch_egress_policy_add(policy, strcmp(member, "deny") == 0, text, error))
      return FALSE;
  }
  return TRUE;
}

HutchEgressPolicy *hutch_egress_policy_from_json(const char *text, GError **error) {
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!json_parser_load_from_data(parser, text, -1, error))
    return NULL;
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "not a JSON object");
    return NULL;
  }
  JsonObject *obj = json_node_get_object(root);
  const char *mode_text = "";
  if (json_object_has_member(obj, "mode")) {
    JsonNode *node = json_object_get_member(obj, "mode");
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "'mode' is not a string");
      return NULL;
    }
    mode_text = json_node_get_string(node);
  }
  HutchEgressMode mode;
  if (!hutch_egress_mode_from_string(mode_text, &mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "unknown mode '%s'", mode_text);
    return NULL;
  }
  g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_new(mode);
  if (!read_rules(policy, obj, "allow", error) || !read_rules(policy, obj, "deny", error))
    return NULL;
  return g_steal_pointer(&policy);
}

gboolean hutch_egress_policy_save(const HutchEgressPolicy *policy, const char *instance_dir,
                                  GError **error) {
  g_autofree char *path = g_build_filename(instance_dir, HUTCH_EGRESS_POLICY_FILE, NULL);
  g_autofree char *text = hutch_egress_policy_to_json(policy);
  return hutch_write_file(path, text, strlen(text), 0600, error);
}

HutchEgressPolicy *hutch_egress_policy_load(const char *instance_dir, GError **error) {
  g_autofree char *path = g_build_filename(instance_dir, HUTCH_EGRESS_POLICY_FILE, NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, error))
    return NULL;
  HutchEgressPolicy *policy = hutch_egress_policy_from_json(text, error);
  if (!policy)
    g_prefix_error(error, "%s: ", path);
  return policy;
}

/* ---- Decisions ------------------------------------------------------------------------ */

/* A refused address class by prefix: IPv4 ones as the 4 bytes of the network. */
typedef struct {
  guint8 net[16];
  guint prefix;
  const char *class;
} SpecialRange;

static const SpecialRange special4[] = {
    {{0, 0, 0, 0}, 8, "unspecified"},
    {{10, 0, 0, 0}, 8, "private"},
    {{100, 64, 0, 0}, 10, "shared (CGNAT)"},
    {{127, 0, 0, 0}, 8, "loopback"},
    {{169, 254, 0, 0}, 16, "link-local"},
    {{172, 16, 0, 0}, 12, "private"},
    {{192, 0, 0, 0}, 24, "reserved"},
    /* The documentation ranges (TEST-NET-1, -2 and -3) are not refused: nothing on the
     * internet has them, and a sandboxed build machine may reach its package mirror there
     * (this project's CI machines do, at 203.0.113.80); a host that uses one for itself has
     * it among its own addresses, which are refused. */
    {{192, 168, 0, 0}, 16, "private"},
    {{198, 18, 0, 0}, 15, "reserved"}, /* benchmarking: hutch's own name addresses */
    {{224, 0, 0, 0}, 4, "multicast"},
    {{240, 0, 0, 0}, 4, "reserved"},
};

static const SpecialRange special6[] = {
    {{0}, 128, "unspecified"},
    {{[15] = 1}, 128, "loopback"},
    {{0xfc}, 7, "unique-local"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xff}, 8, "multicast"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "reserved"},
    {{0x01, 0x00}, 64, "reserved"}, /* discard */
    {{0}, 96, "reserved"},          /* IPv4-compatible (::a.b.c.d) */
    {{0x00, 0x64, 0xff, 0x9b}, 96, "reserved"},       /* NAT64: an IPv4 address behind it */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "reserved"}, /* local NAT64 */
    {{0xfe, 0xc0}, 10, "site-local"},
    {{0x20, 0x02}, 16, "reserved"},             /* 6to4: an IPv4 address inside */
    {{0x20, 0x01, 0x00, 0x00}, 32, "reserved"}, /* Teredo */
};

static gboolean prefix_matches(const guint8 *addr, const guint8 *net, guint prefix) {
  for (guint i = 0; i * 8 < prefix; i++) {
    guint bits = MIN(prefix - i * 8, 8);
    guint8 mask = (guint8)(0xff00 >> bits);
    if ((addr[i] & mask) != (net[i] & mask))
      return FALSE;
  }
  return TRUE;
}

const char *hutch_egress_address_class(const struct sockaddr *addr) {
  if (addr->sa_family == AF_INET) {
    const guint8 *a = (const guint8 *)&((const struct sockaddr_in *)addr)->sin_addr;
    for (gsize i = 0; i < G_N_ELEMENTS(special4); i++)
      if (prefix_matches(a, special4[i].net, special4[i].prefix))
        return special4[i].class;
    return NULL;
  }
  if (addr->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
      struct sockaddr_in v4 = {.sin_family = AF_INET};
      memcpy(&v4.sin_addr, a6->s6_addr + 12, 4);
      return hutch_egress_address_class((struct sockaddr *)&v4);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(special6); i++)
      if (prefix_matches(a6->s6_addr, special6[i].net, special6[i].prefix))
        return special6[i].class;
    return NULL;
  }
  return "reserved";
}

static const guint8 *address_bytes(const struct sockaddr *addr) {
  return addr->sa_family == AF_INET
             ? (const guint8 *)&((const struct sockaddr_in *)addr)->sin_addr
             : ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
}

static const HutchEgressRule *find_name_rule(GPtrArray *rules, const char *name, guint port,
                                             gboolean deny) {
  for (guint i = 0; name && i < rules->len; i++) {
    const HutchEgressRule *rule = g_ptr_array_index(rules, i);
    if (name_matches(rule, name) && port_matches(rule, port, deny))
      return rule;
  }
  return NULL;
}

static const HutchEgressRule *find_address_rule(GPtrArray *rules, const struct sockaddr *addr,
                                                guint port, gboolean deny) {
  for (guint i = 0; i < rules->len; i++) {
    const HutchEgressRule *rule = g_ptr_array_index(rules, i);
    if (range_matches(rule, addr->sa_family, address_bytes(addr)) &&
        port_matches(rule, port, deny))
      return rule;
  }
  return NULL;
}

/* A name as the guest asked for it, as rules hold names: lower case, without a final dot.
 * Without this "EVIL.com" or "evil.com." passed a deny of evil.com. */
static char *normalise_name(const char *name) {
  if (!name)
    return NULL;
  char *lower = g_ascii_strdown(name, -1);
  gsize len = strlen(lower);
  if (len > 0 && lower[len - 1] == '.')
    lower[len - 1] = '\0';
  return lower;
}

gboolean hutch_egress_check_name(const HutchEgressPolicy *policy, const char *asked, guint port,
                                 char **ret_reason) {
  g_autofree char *name = normalise_name(asked);
  const HutchEgressRule *rule = find_name_rule(policy->deny, name, port, TRUE);
  if (rule) {
    *ret_reason = g_strdup_printf("denied by rule '%s'", rule->text);
    return FALSE;
  }
  if (policy->mode == HUTCH_EGRESS_NONE) {
    *ret_reason = g_strdup("egress is none: nothing leaves this VM");
    return FALSE;
  }
  if (port == 53) {
    /* the guest's names are answered by hutch; a resolver outside is never reached */
    *ret_reason = g_strdup("DNS goes to hutch's own resolver only");
    return FALSE;
  }
  if (policy->mode == HUTCH_EGRESS_ALLOWLIST && name && !find_name_rule(policy->allow, name, port, FALSE)) {
    *ret_reason = g_strdup_printf("%s:%u is not in the allowlist", asked, port);
    return FALSE;
  }
  return TRUE;
}

static gboolean same_address(GInetAddress *a, const struct sockaddr *addr) {
  int family = addr->sa_family;
  if (family != AF_INET && family != AF_INET6)
    return FALSE;
  if ((family == AF_INET && g_inet_address_get_family(a) != G_SOCKET_FAMILY_IPV4) ||
      (family == AF_INET6 && g_inet_address_get_family(a) != G_SOCKET_FAMILY_IPV6))
    return FALSE;
  return memcmp(g_inet_address_to_bytes(a), address_bytes(addr), family == AF_INET ? 4 : 16) ==
         0;
}

static gboolean in_list(GPtrArray *addresses, const struct sockaddr *addr) {
  for (guint i = 0; addresses && i < addresses->len; i++)
    if (same_address(g_ptr_array_index(addresses, i), addr))
      return TRUE;
  return FALSE;
}

gboolean hutch_egress_check_address(const HutchEgressPolicy *policy, const char *name,
                                    const struct sockaddr *addr, guint port,
                                    GPtrArray *host_addresses, GPtrArray *outside,
                                    char **ret_reason) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)
    inet_ntop(addr->sa_family, address_bytes(addr), text, sizeof text);
  const char *via = name ? " (the address of " : "";
  const char *via_name = name ? name : "";
  const char *via_end = name ? ")" : "";
  /* ::ffff:a.b.c.d is a.b.c.d: IPv4 deny and allow rules, the host's IPv4 addresses and the
   * outside list apply to it (they did not: a denied address or the host's public address
   * was reached in this form, from the guest or from an AAAA record) */
  struct sockaddr_in mapped = {.sin_family = AF_INET};
  if (addr->sa_family == AF_INET6 &&
      IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)addr)->sin6_addr)) {
    memcpy(&mapped.sin_addr, ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr + 12, 4);
    addr = (const struct sockaddr *)&mapped;
  }
  const HutchEgressRule *rule = find_address_rule(policy->deny, addr, port, TRUE);
  if (rule) {
    *ret_reason = g_strdup_printf("%s%s%s%s denied by rule '%s'", text, via, via_name, via_end,
                                  rule->text);
    return FALSE;
  }
  if (policy->mode == HUTCH_EGRESS_NONE) {
    *ret_reason = g_strdup("egress is none: nothing leaves this VM");
    return FALSE;
  }
  if (port == 53) {
    *ret_reason = g_strdup("DNS goes to hutch's own resolver only");
    return FALSE;
  }
  const char *class = hutch_egress_address_class(addr);
  if (class && strcmp(class, "loopback") == 0) {
    *ret_reason = g_strdup_printf("%s%s%s%s is the host's loopback", text, via, via_name,
                                  via_end);
    return FALSE;
  }
  /* on Linux a connection to 0.0.0.0 or :: goes to the host's loopback: no rule opens it */
  if (class && strcmp(class, "unspecified") == 0) {
    *ret_reason = g_strdup_printf("%s%s%s%s is unspecified, which reaches the host's loopback",
                                  text, via, via_name, via_end);
    return FALSE;
  }
  /* the tests' stand-ins for servers outside: not the host's, not private; the allowlist
   * still applies to them */
  gboolean is_outside = in_list(outside, addr);
  /* the host itself, whatever an allow rule covers (allowing a LAN range must not open the
   * host's own address in it, and with it every service it has on 0.0.0.0) */
  if (!is_outside && in_list(host_addresses, addr)) {
    *ret_reason = g_strdup_printf("%s%s%s%s is an address of the host", text, via, via_name,
                                  via_end);
    return FALSE;
  }
  const HutchEgressRule *allowed = find_address_rule(policy->allow, addr, port, FALSE);
  if (allowed)
    return TRUE;
  if (class && !is_outside) {
    *ret_reason = g_strdup_printf("%s%s%s%s is a %s address (allow it with an address rule)",
                                  text, via, via_name, via_end, class);
    return FALSE;
  }
  if (policy->mode == HUTCH_EGRESS_ALLOWLIST && !name) {
    *ret_reason = g_strdup_printf("%s:%u is not in the allowlist", text, port);
    return FALSE;
  }
  return TRUE;
}
