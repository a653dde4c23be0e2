/* profile.c: see profile-private.h. */
#include "config.h"
