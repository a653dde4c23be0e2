/* net.c: see net-private.h. */
#include "config.h"
