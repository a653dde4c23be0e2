/* starts virtiofsd for one share via libhutch's share module; prints the socket path */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include "share-private.h"
int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "stop") == 0) {
    hutch_share_stop(argv[2]);
    return 0;
  }
  if (argc != 5) {
    fprintf(stderr, "driver HOSTDIR RUNTIME UID GID | stop RUNTIME\n");
    return 2;
  }
  HutchProfile *profile = hutch_profile_new_defaults();
  HutchShare *share = g_new0(HutchShare, 1);
  share->host = g_strdup(argv[1]);
  share->guest = g_strdup("/mnt/x");
  share->writable = TRUE;
  g_ptr_array_add(profile->shares, share);
  GError *error = NULL;
  GPtrArray *plan = hutch_share_plan(profile, NULL, argv[2], g_get_home_dir(), "/home/dev", &error);
  if (!plan || !hutch_share_start(plan, atoi(argv[3]), atoi(argv[4]), &error)) {
    fprintf(stderr, "error: %s\n", error->message);
    return 1;
  }
  HutchSharePlanEntry *e = g_ptr_array_index(plan, 0);
  printf("%s %s\n", e->socket, e->pidfile);
  return 0;
}
