/* domain.c: see domain-private.h. */
#include "config.h"
