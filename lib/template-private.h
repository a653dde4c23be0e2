/* template-private.h: templates in the image cache (template.c). */
#pragma once

#include "profile-private.h"

/* The template's files in its cache directory besides image.json and the disk. */
#define HUTCH_TEMPLATE_PROFILE "profile.yaml"

gboolean hutch_template_exists(const char *name);

/* The profile a create gets when profile's image is a template: the template's user,
 * provisioning steps, environment and secrets (what its disk holds), with profile's machine
 * (cpus, memory, disk, accel, boot_timeout), shares, ports and network (when profile sets
 * one). A profile that asks for a step the template does not hold, another user, other
 * environment variables or other secrets is refused, naming where it says so: a template's
 * VM does not provision. */
HutchProfile *hutch_template_adopt(const HutchProfile *profile, GError **error);
