/* edit-private.h: `hutch edit`'s pure part, for tests. The rest is hutch_instance_edit
 * (hutch.h). */
#pragma once

#include "profile-private.h"

/* Applies edit to profile (the frozen profile of a VM whose guest user's home is guest_home),
 * in the order hutch.h gives, with the rules and messages of the create options it mirrors.
 * On failure the profile is half-changed: apply to a copy. */
gboolean hutch_edit_apply(HutchProfile *profile, const HutchEdit *edit, const char *guest_home,
                          GError **error);
