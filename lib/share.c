/* share.c: see share-private.h. */
#include "config.h"
