/* test-snapshot.c: snapshots of a shut-off hutch domain through libvirt's in-process test
 * driver (the running case, which stops and starts the VM, is in tests/e2e/snapshot.sh). */
#include "config.h"

#include <glib/gstdio.h>

#include "context-private.h"
#include "instance-private.h"
#include "util-private.h"

static const char domain_xml[] =
    "<domain type='test'><name>snappy</name><memory unit='MiB'>256</memory>"
    "<os><type>hvm</type></os>"
    "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
    "<hutch:profile>p</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>"
    "<hutch:instance-dir>/nonexistent/i</hutch:instance-dir>"
    "<hutch:runtime-dir>/nonexistent/r</hutch:runtime-dir><hutch:user>u</hutch:user>"
    "</hutch:instance></metadata></domain>";

static const char foreign_xml[] =
    "<domain type='test'><name>foreign</name><memory unit='MiB'>256</memory>"
    "<os><type>hvm</type></os></domain>";

static HutchContext *context_with_domains(void) {
  g_autoptr(GError) error = NULL;
  HutchContext *ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_assert_no_error(error);
  g_autoptr(virDomain) d1 = virDomainDefineXML(conn, domain_xml);
  g_autoptr(virDomain) d2 = virDomainDefineXML(conn, foreign_xml);
  g_assert_nonnull(d1);
  g_assert_nonnull(d2);
  return ctx;
}

static void test_lifecycle(void) {
  g_autoptr(HutchContext) ctx = context_with_domains();
  g_autoptr(GError) error = NULL;

  g_autoptr(JsonArray) empty = hutch_snapshot_list(ctx, "snappy", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(json_array_get_length(empty), ==, 0);

  g_assert_true(hutch_snapshot_create(ctx, "snappy", "first", "with <xml> & \"quotes\"", &error));
  g_assert_no_error(error);
  g_assert_true(hutch_snapshot_create(ctx, "snappy", "second", NULL, &error));
  g_assert_no_error(error);

  g_autoptr(JsonArray) list = hutch_snapshot_list(ctx, "snappy", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(json_array_get_length(list), ==, 2);
  JsonObject *first = json_array_get_object_element(list, 0);
  JsonObject *second = json_array_get_object_element(list, 1);
  g_assert_cmpstr(json_object_get_string_member(first, "name"), ==, "first");
  /* the description went through XML intact */
  g_assert_cmpstr(json_object_get_string_member(first, "description"), ==,
                  "with <xml> & \"quotes\"");
  g_assert_cmpstr(json_object_get_string_member(second, "name"), ==, "second");
  g_assert_cmpstr(json_object_get_string_member(second, "description"), ==, "");
  const char *created = json_object_get_string_member(first, "created");
  g_assert_cmpuint(strlen(created), ==, strlen("2026-01-01T00:00:00Z"));
  g_assert_true(g_str_has_suffix(created, "Z"));
  g_assert_false(json_object_get_boolean_member(first, "current"));
  g_assert_true(json_object_get_boolean_member(second, "current"));

  g_assert_true(hutch_snapshot_revert(ctx, "snappy", "first", &error));
  g_assert_no_error(error);
  g_autoptr(JsonArray) after_revert = hutch_snapshot_list(ctx, "snappy", &error);
  g_assert_true(
      json_object_get_boolean_member(json_array_get_object_element(after_revert, 0), "current"));

  g_assert_true(hutch_snapshot_delete(ctx, "snappy", "second", &error));
  g_assert_no_error(error);
  g_autoptr(JsonArray) after_delete = hutch_snapshot_list(ctx, "snappy", &error);
  g_assert_cmpuint(json_array_get_length(after_delete), ==, 1);
}

static void test_errors(void) {
  g_autoptr(HutchContext) ctx = context_with_domains();
  g_autoptr(GError) error = NULL;

  g_assert_true(hutch_snapshot_create(ctx, "snappy", "once", NULL, &error));
  g_assert_false(hutch_snapshot_create(ctx, "snappy", "once", NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS);
  g_clear_error(&error);

  const char *bad[] = {"", "Upper", "1st", "a/b", "with space", "dot.dot", NULL};
  for (guint i = 0; bad[i]; i++) {
    g_assert_false(hutch_snapshot_create(ctx, "snappy", bad[i], NULL, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_nonnull(strstr(error->message, "invalid snapshot name"));
    g_clear_error(&error);
  }

  g_assert_false(hutch_snapshot_revert(ctx, "snappy", "missing", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_assert_nonnull(strstr(error->message, "no such snapshot"));
  g_clear_error(&error);
  g_assert_false(hutch_snapshot_delete(ctx, "snappy", "missing", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);

  g_assert_false(hutch_snapshot_create(ctx, "nosuchvm", "x", NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  g_assert_null(hutch_snapshot_list(ctx, "nosuchvm", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);

  /* a domain hutch did not make is left alone */
  g_assert_false(hutch_snapshot_create(ctx, "foreign", "x", NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH);
  g_clear_error(&error);
  g_autoptr(GError) list_error = NULL;
  g_assert_null(hutch_snapshot_list(ctx, "foreign", &list_error));
  g_assert_error(list_error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH);
}

static gboolean stamp_exists(const char *dir) {
  g_autofree char *stamp = g_build_filename(dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  return g_file_test(stamp, G_FILE_TEST_EXISTS);
}

static void set_stamp(const char *dir, gboolean on) {
  g_autofree char *stamp = g_build_filename(dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  if (on)
    g_assert_true(g_file_set_contents(stamp, "", 0, NULL));
  else
    g_unlink(stamp);
}

/* A snapshot taken before the first boot finished brings back a first boot: the provisioned
 * stamp (outside the snapshot, in the instance directory) goes with a revert to it. */
static void test_revert_provisioned(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("hutch-snapshot-XXXXXX", &error);
  g_assert_no_error(error);
  g_autofree char *xml = g_strdup_printf(
      "<domain type='test'><name>stamped</name><memory unit='MiB'>256</memory>"
      "<os><type>hvm</type></os>"
      "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
      "<hutch:profile>p</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>"
      "<hutch:instance-dir>%s</hutch:instance-dir>"
      "<hutch:runtime-dir>/nonexistent/r</hutch:runtime-dir><hutch:user>u</hutch:user>"
      "</hutch:instance></metadata></domain>",
      dir);
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_assert_no_error(error);
  g_autoptr(virDomain) domain = virDomainDefineXML(conn, xml);
  g_assert_nonnull(domain);

  /* what an older hutch took: nothing recorded */
  g_autoptr(virDomainSnapshot) old =
      virDomainSnapshotCreateXML(domain, "<domainsnapshot><name>old</name></domainsnapshot>", 0);
  g_assert_nonnull(old);

  /* before the first boot finished, then after */
  g_assert_true(hutch_snapshot_create(ctx, "stamped", "fresh", NULL, &error));
  g_assert_no_error(error);
  set_stamp(dir, TRUE);
  g_autofree char *failed = g_build_filename(dir, HUTCH_INSTANCE_OPTIONAL_FAILED, NULL);
  g_assert_true(g_file_set_contents(failed, "01 tools 1 E: x\n", -1, NULL));
  g_assert_true(hutch_snapshot_create(ctx, "stamped", "done", NULL, &error));
  g_assert_no_error(error);

  g_assert_true(hutch_snapshot_revert(ctx, "stamped", "done", &error));
  g_assert_no_error(error);
  g_assert_true(stamp_exists(dir));
  g_assert_true(hutch_snapshot_revert(ctx, "stamped", "fresh", &error));
  g_assert_no_error(error);
  g_assert_false(stamp_exists(dir));
  g_assert_false(g_file_test(failed, G_FILE_TEST_EXISTS));
  /* and back to the provisioned disk: the stamp with it */
  g_assert_true(hutch_snapshot_revert(ctx, "stamped", "done", &error));
  g_assert_no_error(error);
  g_assert_true(stamp_exists(dir));

  /* a snapshot from before hutch recorded it (no <provisioned>) leaves the stamp alone */
  g_assert_true(hutch_snapshot_revert(ctx, "stamped", "old", &error));
  g_assert_no_error(error);
  g_assert_true(stamp_exists(dir));
  set_stamp(dir, FALSE);
  g_assert_true(hutch_snapshot_revert(ctx, "stamped", "old", &error));
  g_assert_no_error(error);
  g_assert_false(stamp_exists(dir));

  virDomainUndefineFlags(domain, VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA);
  g_assert_true(hutch_rmtree(dir, NULL));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/snapshot/lifecycle", test_lifecycle);
  g_test_add_func("/snapshot/errors", test_errors);
  g_test_add_func("/snapshot/revert-provisioned", test_revert_provisioned);
  return g_test_run();
}
