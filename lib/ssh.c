/* ssh.c: see ssh-private.h. */
#include "config.h"
