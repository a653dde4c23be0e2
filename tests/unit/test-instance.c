/* test-instance.c: what the lifecycle decides without a VM: the guest user, and how list
 * describes instances (libvirt's in-process test:///default driver, a fake HOME). */
#include "config.h"

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

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/instance/guest-user-gid", test_guest_user_gid);
  return g_test_run();
}
