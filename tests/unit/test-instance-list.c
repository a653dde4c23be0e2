/* test-instance.c: what the lifecycle decides without a VM: the guest user, and how list
 * describes instances (libvirt's in-process test:///default driver, a fake HOME). */
#include "config.h"

#include <glib/gstdio.h>
#include <unistd.h>

#include "instance-private.h"

static void test_guest_user_gid(void) {
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  g_autofree char *name = NULL;
  guint uid = 0, gid = 0;

  profile->user_name = g_strdup("dev");
  profile->user_uid = 1500;
  hutch_instance_guest_user(profile, &name, &uid, &gid);
  g_assert_cmpstr(name, ==, "dev");
  g_assert_cmpuint(uid, ==, 1500);
  g_assert_cmpuint(gid, ==, 1500); /* the user's own group takes the uid's number */
  g_clear_pointer(&name, g_free);

  /* the profile's gid is the one shares are mapped to, not the uid */
  profile->user_gid = 2500;
  hutch_instance_guest_user(profile, &name, &uid, &gid);
  g_assert_cmpuint(uid, ==, 1500);
  g_assert_cmpuint(gid, ==, 2500);
  g_clear_pointer(&name, g_free);

  /* root on the host is never root in the guest */
  g_free(profile->user_name);
  profile->user_name = g_strdup("root");
  profile->user_uid = 0;
  profile->user_gid = -1;
  hutch_instance_guest_user(profile, &name, &uid, &gid);
  g_assert_cmpstr(name, ==, "dev");
  g_assert_cmpuint(uid, ==, 1000);
  g_assert_cmpuint(gid, ==, 1000);
}

static char *data_home; /* a private XDG_DATA_HOME */

static void make_dir(const char *name, const char *marker) {
  g_autofree char *dir = g_build_filename(data_home, "hutch", "instances", name, NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  if (marker) {
    g_autofree char *path = g_build_filename(dir, marker, NULL);
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
  }
}

static JsonObject *find(JsonArray *list, const char *name) {
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *o = json_array_get_object_element(list, i);
    if (g_strcmp0(json_object_get_string_member(o, "name"), name) == 0)
      return o;
  }
  return NULL;
}

/* An instance directory whose domain libvirt does not know (a session daemon with another
 * config tree serves the socket) is shown, explained, and never created anew. */
static void test_missing(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_assert_no_error(error);
  g_autofree char *present_dir = g_build_filename(data_home, "hutch", "instances", "present", NULL);
  g_autofree char *xml = g_strdup_printf(
      "<domain type='test'><name>present</name><memory unit='MiB'>256</memory>"
      "<os><type>hvm</type></os>"
      "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
      "<hutch:profile>p</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>"
      "<hutch:instance-dir>%s</hutch:instance-dir>"
      "<hutch:runtime-dir>/nonexistent/r</hutch:runtime-dir><hutch:user>u</hutch:user>"
      "</hutch:instance></metadata></domain>",
      present_dir);
  g_autoptr(virDomain) domain = virDomainDefineXML(conn, xml);
  g_assert_nonnull(domain);
  make_dir("present", NULL);
  make_dir("ghost", HUTCH_INSTANCE_PROVISIONED);
  make_dir("busy", HUTCH_INSTANCE_CREATING); /* a create at work */
  make_dir("Not_A_Name", NULL);

  g_autoptr(JsonArray) list = hutch_instance_list(ctx, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(json_array_get_length(list), ==, 2);
  /* sorted by name, the missing one among the others */
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(list, 0), "name"), ==,
                  "ghost");
  JsonObject *ghost = find(list, "ghost");
  g_assert_cmpstr(json_object_get_string_member(ghost, "state"), ==, "missing");
  g_assert_cmpstr(json_object_get_string_member(ghost, "uri"), ==, "test:///default");
  g_autofree char *ghost_dir = g_build_filename(data_home, "hutch", "instances", "ghost", NULL);
  g_assert_cmpstr(json_object_get_string_member(ghost, "instance_dir"), ==, ghost_dir);
  g_assert_true(json_object_get_boolean_member(ghost, "provisioned"));
  g_assert_cmpstr(json_object_get_string_member(find(list, "present"), "state"), ==, "stopped");
  g_assert_null(find(list, "busy"));

  /* info (any lookup) says where the files are and the likely cause */
  g_assert_null(hutch_instance_info(ctx, "ghost", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_assert_nonnull(strstr(error->message, ghost_dir));
  g_assert_nonnull(strstr(error->message, "another XDG_CONFIG_HOME"));
  g_clear_error(&error);
  g_assert_false(hutch_instance_exists(ctx, "ghost", &error));
  g_assert_no_error(error);

  /* start would create it: refused before anything is made or downloaded */
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  profile->name = g_strdup("p");
  g_assert_false(hutch_instance_create(ctx, "ghost", profile, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS);
  g_assert_nonnull(strstr(error->message, "libvirt knows no such domain"));
  g_clear_error(&error);
  g_autofree char *stamp = g_build_filename(ghost_dir, HUTCH_INSTANCE_PROVISIONED, NULL);
  g_assert_true(g_file_test(stamp, G_FILE_TEST_EXISTS));

  g_autofree char *instances = g_build_filename(data_home, "hutch", "instances", NULL);
  g_autoptr(GPtrArray) missing = hutch_instance_missing(ctx, instances, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(missing->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(missing, 0), ==, "ghost");
  virDomainUndefine(domain);
}

int main(int argc, char **argv) {
  data_home = g_dir_make_tmp("hutch-test-instance-XXXXXX", NULL);
  g_assert_nonnull(data_home);
  g_setenv("XDG_DATA_HOME", data_home, TRUE);
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/instance/guest-user-gid", test_guest_user_gid);
  g_test_add_func("/instance/missing", test_missing);
  int status = g_test_run();
  hutch_rmtree(data_home, NULL);
  g_free(data_home);
  return status;
}
