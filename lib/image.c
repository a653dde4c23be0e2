/* image.c: see image-private.h. */
#include "config.h"
