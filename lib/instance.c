/* instance.c: see instance-private.h. */
#include "config.h"
