/* seed.c: see seed-private.h. */
#include "config.h"
