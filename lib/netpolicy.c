/* netpolicy.c: hutch net, a VM's egress policy as the user sees and changes it, and its
 * decision log. */
#include "config.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "broker-private.h"
#include "egress-helper-private.h"
#include "egress-private.h"
#include "instance-private.h"

static HutchEgressPolicy *load_policy(HutchInstance *instance, GError **error) {
  g_autofree char *path =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_autoptr(HutchProfile) profile = hutch_profile_load_file(path, error);
  if (!profile)
    return NULL;
  return hutch_instance_egress_policy(instance->meta->instance_dir, profile, error);
}

JsonObject *hutch_instance_net(HutchContext *ctx, const char *name, const char *mode,
                               const char *const *allow, const char *const *deny,
                               GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  g_autoptr(HutchEgressPolicy) policy = load_policy(instance, error);
  if (!policy)
    return NULL;
  HutchEgressMode before = policy->mode;
  gboolean changed = FALSE;
  if (mode) {
    if (!hutch_egress_mode_from_string(mode, &policy->mode)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "unknown egress mode '%s' (none, allowlist, public or unrestricted)", mode);
      return NULL;
    }
    changed = TRUE;
  }
  for (const char *const *a = allow; a && *a; a++, changed = TRUE)
    if (!hutch_egress_policy_add(policy, FALSE, *a, error))
      return NULL;
  for (const char *const *d = deny; d && *d; d++, changed = TRUE)
    if (!hutch_egress_policy_add(policy, TRUE, *d, error))
      return NULL;
  g_autofree char *broker = g_build_filename(instance->meta->instance_dir, HUTCH_BROKER_FILE, NULL);
  if (policy->mode == HUTCH_EGRESS_UNRESTRICTED && before != HUTCH_EGRESS_UNRESTRICTED &&
      g_file_test(broker, G_FILE_TEST_EXISTS)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "%s has secrets, which only the egress policy's proxy puts into requests: "
                "under egress unrestricted its keys would not work (use public)",
                name);
    return NULL;
  }
  if (changed && !hutch_egress_policy_save(policy, instance->meta->instance_dir, error))
    return NULL;

  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "name", name);
  json_object_set_string_member(o, "egress", hutch_egress_mode_to_string(policy->mode));
  json_object_set_array_member(o, "allow", hutch_egress_rules_to_json(policy->allow));
  json_object_set_array_member(o, "deny", hutch_egress_rules_to_json(policy->deny));
  /* "applied": the running helper enforces it now; "next-start": a stopped VM, or a change
   * to or from unrestricted, which is another network (passt alone); "saved": no change */
  const char *applied = "saved";
  gboolean helper = hutch_egress_running(instance->meta->runtime_dir);
  if (changed) {
    gboolean switches = (before == HUTCH_EGRESS_UNRESTRICTED) !=
                        (policy->mode == HUTCH_EGRESS_UNRESTRICTED);
    if (helper && !switches && hutch_egress_reload(instance->meta->runtime_dir))
      applied = "applied";
    else
      applied = "next-start";
  }
  json_object_set_string_member(o, "change", changed ? applied : "none");
  json_object_set_boolean_member(o, "running", hutch_instance_is_active(instance));
  guint64 allowed = 0, denied = 0;
  if (helper && hutch_egress_counts(instance->meta->runtime_dir, &allowed, &denied)) {
    json_object_set_int_member(o, "allowed", (gint64)allowed);
    json_object_set_int_member(o, "denied", (gint64)denied);
  }
  return o;
}

JsonArray *hutch_instance_net_log(HutchContext *ctx, const char *name, guint max_entries,
                                  GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  /* the older file first */
  const char *files[] = {HUTCH_EGRESS_LOG ".1", HUTCH_EGRESS_LOG};
  for (gsize f = 0; f < G_N_ELEMENTS(files); f++) {
    g_autofree char *path = g_build_filename(instance->meta->instance_dir, files[f], NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
      continue;
    g_auto(GStrv) split = g_strsplit(text, "\n", -1);
    for (char **l = split; *l; l++)
      if (**l)
        g_ptr_array_add(lines, g_strdup(*l));
  }
  JsonArray *entries = json_array_new();
  guint first = max_entries && lines->len > max_entries ? lines->len - max_entries : 0;
  for (guint i = first; i < lines->len; i++) {
    /* written by the helper, which json-glib escapes; a line that does not parse (a write cut
     * short) is left out */
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, g_ptr_array_index(lines, i), -1, NULL))
      continue;
    JsonNode *root = json_parser_get_root(parser);
    if (root && JSON_NODE_HOLDS_OBJECT(root))
      json_array_add_object_element(entries, json_object_ref(json_node_get_object(root)));
  }
  return entries;
}
