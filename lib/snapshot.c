/* snapshot.c: libvirt internal snapshots of a hutch VM.
 *
 * libvirt 9.0 reverts internal snapshots only, and only of a shut-off domain: a running VM
 * with virtiofs cannot save its memory state, and reverting external snapshots arrived in
 * 9.9. So a snapshot is taken of the shut-off VM; a running VM is shut down gracefully first
 * and started again afterwards (with its helpers, through hutch_instance_start). The read-only
 * seed cdrom is raw, but libvirt leaves read-only disks out of an internal snapshot. Shared
 * folders live on the host and are not part of a snapshot. */
#include "config.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <libxml/tree.h>

#include "instance-private.h"

/* Snapshot names follow the rule of VM names: they appear on command lines and in
 * completion, and libvirt would otherwise accept anything. */
static gboolean snapshot_name_is_valid(const char *snapshot, GError **error) {
  if (hutch_name_is_valid(snapshot, NULL))
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
              "invalid snapshot name '%s': use a lower-case letter followed by up to 62 "
              "lower-case letters, digits or '-'",
              snapshot ? snapshot : "");
  return FALSE;
}

static char *snapshot_xml(const char *snapshot, const char *description) {
  xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "domainsnapshot");
  xmlDocSetRootElement(doc, root);
  xmlNewTextChild(root, NULL, BAD_CAST "name", BAD_CAST snapshot);
  if (description && *description)
    xmlNewTextChild(root, NULL, BAD_CAST "description", BAD_CAST description);
  xmlChar *out = NULL;
  int len = 0;
  xmlDocDumpFormatMemory(doc, &out, &len, 1);
  xmlFreeDoc(doc);
  char *xml = g_strndup((const char *)out, len);
  xmlFree(out);
  return xml;
}

static virDomainSnapshotPtr lookup_snapshot(HutchInstance *instance, const char *snapshot,
                                            GError **error) {
  virDomainSnapshotPtr snap = virDomainSnapshotLookupByName(instance->domain, snapshot, 0);
  if (!snap) {
    virErrorPtr last = virGetLastError();
    if (last && last->code == VIR_ERR_NO_DOMAIN_SNAPSHOT)
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                  "no such snapshot (hutch snapshot list %s)", instance->name);
    else
      hutch_set_libvirt_error(error, "looking up snapshot '%s'", snapshot);
  }
  return snap;
}

/* Looks the instance and validates the snapshot name; *ret_running says whether it runs. */
static HutchInstance *prepare(HutchContext *ctx, const char *name, const char *snapshot,
                              gboolean *ret_running, GError **error) {
  if (!snapshot_name_is_valid(snapshot, error))
    return NULL;
  HutchInstance *instance = hutch_instance_lookup(ctx, name, error);
  if (instance && ret_running)
    *ret_running = hutch_instance_is_active(instance);
  return instance;
}

/* libvirt 9.0 snapshots only a shut-off domain: stop it and say why. */
static gboolean shut_down_for(HutchContext *ctx, const char *name, const char *why, gboolean force,
                              GError **error) {
  hutch_progress_note(ctx,
                      "%s is running: shutting it down to %s (libvirt snapshots only a "
                      "shut-off VM); it is started again afterwards",
                      name, why);
  return hutch_instance_stop(ctx, name, force, error);
}

static gboolean start_again(HutchContext *ctx, const char *name, GError **error) {
  hutch_progress_note(ctx, "starting %s again", name);
  return hutch_instance_start(ctx, name, TRUE, error);
}

/* The provisioned stamp lives in the instance directory, outside the snapshot: the domain's
 * metadata says whether it existed when the snapshot was taken, and the snapshot keeps that
 * definition. */
static gboolean record_provisioned(HutchInstance *instance, GError **error) {
  g_autofree char *stamp =
      g_build_filename(instance->meta->instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  return hutch_instance_set_meta(instance->domain, "provisioned",
                                 g_file_test(stamp, G_FILE_TEST_EXISTS) ? "yes" : "no", error);
}

/* The stamp as the snapshot says: after a revert to a snapshot of a VM whose first boot had
 * not finished, the next start is a first boot again (its provisioning report, the wait for
 * cloud-init); a revert to a provisioned one puts the stamp back. A snapshot from before
 * hutch recorded it leaves the stamp alone. */
static gboolean restore_provisioned(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) reverted = hutch_instance_lookup(ctx, name, error);
  if (!reverted)
    return FALSE;
  if (reverted->meta->provisioned < 0)
    return TRUE;
  if (reverted->meta->provisioned == 1) {
    g_autofree char *stamp =
        g_build_filename(reverted->meta->instance_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
    return g_file_test(stamp, G_FILE_TEST_EXISTS) || hutch_write_file(stamp, "", 0, 0600, error);
  }
  const char *files[] = {HUTCH_INSTANCE_PROVISIONED, HUTCH_INSTANCE_OPTIONAL_FAILED};
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *path = g_build_filename(reverted->meta->instance_dir, files[i], NULL);
    if (g_unlink(path) < 0 && errno != ENOENT) {
      int saved = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "removing %s: %s", path,
                  g_strerror(saved));
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean create_steps(HutchContext *ctx, const char *name, const char *snapshot,
                             const char *description, GError **error) {
  gboolean running = FALSE;
  g_autoptr(HutchInstance) instance = prepare(ctx, name, snapshot, &running, error);
  if (!instance)
    return FALSE;
  g_autoptr(virDomainSnapshot) existing =
      virDomainSnapshotLookupByName(instance->domain, snapshot, 0);
  if (existing) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS,
                "it exists already (hutch snapshot delete %s %s)", name, snapshot);
    return FALSE;
  }
  /* a running VM is started again afterwards: not by root, so not stopped by it either */
  if (running && (!hutch_context_check_may_run_vms(ctx, error) ||
                  !shut_down_for(ctx, name, "take the snapshot", FALSE, error)))
    return FALSE;

  hutch_progress_begin(ctx, "snapshot", "saving '%s' of %s", snapshot, name);
  g_autofree char *xml = snapshot_xml(snapshot, description);
  g_autoptr(virDomainSnapshot) snap = NULL;
  if (record_provisioned(instance, error)) {
    snap = virDomainSnapshotCreateXML(instance->domain, xml, 0);
    if (!snap)
      hutch_set_libvirt_error(error, "taking the snapshot");
  }
  if (!snap) {
    /* the VM was running before: leave it running even though the snapshot failed */
    g_autoptr(GError) start_error = NULL;
    if (running && !start_again(ctx, name, &start_error))
      g_prefix_error(error, "(starting it again failed too: %s) ", start_error->message);
    return FALSE;
  }
  hutch_progress_end(ctx, "snapshot", "saved '%s' of %s", snapshot, name);
  return !running || start_again(ctx, name, error);
}

gboolean hutch_snapshot_create(HutchContext *ctx, const char *name, const char *snapshot,
                               const char *description, GError **error) {
  if (!hutch_context_check_not_system(ctx, "snapshots", error))
    return FALSE;
  if (create_steps(ctx, name, snapshot, description, error))
    return TRUE;
  g_prefix_error(error, "snapshot '%s' of '%s': ", snapshot ? snapshot : "", name);
  return FALSE;
}

static gboolean revert_steps(HutchContext *ctx, const char *name, const char *snapshot,
                             GError **error) {
  gboolean running = FALSE;
  g_autoptr(HutchInstance) instance = prepare(ctx, name, snapshot, &running, error);
  if (!instance)
    return FALSE;
  g_autoptr(virDomainSnapshot) snap = lookup_snapshot(instance, snapshot, error);
  if (!snap)
    return FALSE;
  /* The running state is about to be thrown away: no need to wait for a clean power-off. */
  if (running && (!hutch_context_check_may_run_vms(ctx, error) ||
                  !shut_down_for(ctx, name, "revert it", TRUE, error)))
    return FALSE;
  hutch_progress_begin(ctx, "revert", "to '%s'", snapshot);
  if (virDomainRevertToSnapshot(snap, 0) < 0) {
    hutch_set_libvirt_error(error, "reverting");
    return FALSE;
  }
  if (!restore_provisioned(ctx, name, error))
    return FALSE;
  hutch_progress_end(ctx, "revert", "to '%s'", snapshot);
  return !running || start_again(ctx, name, error);
}

gboolean hutch_snapshot_revert(HutchContext *ctx, const char *name, const char *snapshot,
                               GError **error) {
  if (!hutch_context_check_not_system(ctx, "snapshots", error))
    return FALSE;
  if (revert_steps(ctx, name, snapshot, error))
    return TRUE;
  g_prefix_error(error, "reverting '%s' to snapshot '%s': ", name, snapshot ? snapshot : "");
  return FALSE;
}

static gboolean delete_steps(HutchContext *ctx, const char *name, const char *snapshot,
                             GError **error) {
  g_autoptr(HutchInstance) instance = prepare(ctx, name, snapshot, NULL, error);
  if (!instance)
    return FALSE;
  g_autoptr(virDomainSnapshot) snap = lookup_snapshot(instance, snapshot, error);
  if (!snap)
    return FALSE;
  if (virDomainSnapshotDelete(snap, 0) < 0) {
    hutch_set_libvirt_error(error, "deleting");
    return FALSE;
  }
  hutch_progress_note(ctx, "deleted snapshot '%s' of %s", snapshot, name);
  return TRUE;
}

gboolean hutch_snapshot_delete(HutchContext *ctx, const char *name, const char *snapshot,
                               GError **error) {
  if (!hutch_context_check_not_system(ctx, "snapshots", error))
    return FALSE;
  if (delete_steps(ctx, name, snapshot, error))
    return TRUE;
  g_prefix_error(error, "snapshot '%s' of '%s': ", snapshot ? snapshot : "", name);
  return FALSE;
}

/* The text of the first child element of root called name, or NULL. */
static char *child_text(xmlNodePtr root, const char *name) {
  for (xmlNodePtr child = root ? root->children : NULL; child; child = child->next) {
    if (child->type == XML_ELEMENT_NODE && xmlStrEqual(child->name, BAD_CAST name)) {
      xmlChar *content = xmlNodeGetContent(child);
      char *text = g_strdup((const char *)content);
      xmlFree(content);
      return text;
    }
  }
  return NULL;
}

/* The documented snapshot object (docs/json.md). */
static JsonObject *describe_snapshot(virDomainSnapshotPtr snap, GError **error) {
  g_autofree char *xml = virDomainSnapshotGetXMLDesc(snap, 0);
  if (!xml) {
    hutch_set_libvirt_error(error, "reading snapshot '%s'", virDomainSnapshotGetName(snap));
    return NULL;
  }
  xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "snapshot.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS);
  if (!doc) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_LIBVIRT, "snapshot '%s': libvirt gave no XML",
                virDomainSnapshotGetName(snap));
    return NULL;
  }
  xmlNodePtr root = xmlDocGetRootElement(doc);
  g_autofree char *description = child_text(root, "description");
  g_autofree char *creation = child_text(root, "creationTime");
  xmlFreeDoc(doc);

  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "name", virDomainSnapshotGetName(snap));
  json_object_set_string_member(o, "description", description ? description : "");
  gint64 seconds = creation ? g_ascii_strtoll(creation, NULL, 10) : 0;
  g_autoptr(GDateTime) created = g_date_time_new_from_unix_utc(seconds);
  g_autofree char *created_text =
      created ? g_date_time_format(created, "%Y-%m-%dT%H:%M:%SZ") : g_strdup("");
  json_object_set_string_member(o, "created", created_text);
  json_object_set_boolean_member(o, "current", virDomainSnapshotIsCurrent(snap, 0) == 1);
  return o;
}

/* Oldest first; equal times by name, so the order is stable. */
static gint compare_snapshots(gconstpointer a, gconstpointer b) {
  JsonObject *x = *(JsonObject **)a, *y = *(JsonObject **)b;
  int c = g_strcmp0(json_object_get_string_member(x, "created"),
                    json_object_get_string_member(y, "created"));
  return c ? c
           : g_strcmp0(json_object_get_string_member(x, "name"),
                       json_object_get_string_member(y, "name"));
}

JsonArray *hutch_snapshot_list(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  virDomainSnapshotPtr *snaps = NULL;
  int n = virDomainListAllSnapshots(instance->domain, &snaps, 0);
  if (n < 0) {
    hutch_set_libvirt_error(error, "listing the snapshots of '%s'", name);
    return NULL;
  }
  g_autoptr(GPtrArray) objects = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  gboolean ok = TRUE;
  for (int i = 0; i < n; i++) {
    if (ok) {
      JsonObject *o = describe_snapshot(snaps[i], error);
      if (o)
        g_ptr_array_add(objects, o);
      else
        ok = FALSE;
    }
    virDomainSnapshotFree(snaps[i]);
  }
  free(snaps);
  if (!ok) {
    g_prefix_error(error, "listing the snapshots of '%s': ", name);
    return NULL;
  }
  g_ptr_array_sort(objects, compare_snapshots);
  JsonArray *list = json_array_new();
  for (guint i = 0; i < objects->len; i++)
    json_array_add_object_element(list, json_object_ref(g_ptr_array_index(objects, i)));
  return list;
}
