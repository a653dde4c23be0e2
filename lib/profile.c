/* profile.c: YAML profiles (libyaml) -> HutchProfile, with base: inheritance and errors that
 * name FILE:LINE:COLUMN. */
#include "config.h"

#include "profile-private.h"

static const char *const accel_names[HUTCH_ACCEL_N] = {
    [HUTCH_ACCEL_AUTO] = "auto",
    [HUTCH_ACCEL_KVM] = "kvm",
    [HUTCH_ACCEL_TCG] = "tcg",
};

const char *hutch_accel_to_string(HutchAccel accel) {
  return accel < HUTCH_ACCEL_N ? accel_names[accel] : NULL;
}

gboolean hutch_accel_from_string(const char *text, HutchAccel *ret) {
  for (int i = 0; i < HUTCH_ACCEL_N; i++) {
    if (g_strcmp0(text, accel_names[i]) == 0) {
      *ret = (HutchAccel)i;
      return TRUE;
    }
  }
  return FALSE;
}

static const char *const proto_names[HUTCH_PROTO_N] = {
    [HUTCH_PROTO_TCP] = "tcp",
    [HUTCH_PROTO_UDP] = "udp",
};

const char *hutch_proto_to_string(HutchProto proto) {
  return proto < HUTCH_PROTO_N ? proto_names[proto] : NULL;
}

void hutch_share_free(HutchShare *share) {
  if (!share)
    return;
  g_free(share->host);
  g_free(share->guest);
  g_free(share);
}

void hutch_port_free(HutchPort *port) {
  if (!port)
    return;
  g_free(port->host_ip);
  g_free(port);
}

static void provision_step_free(HutchProvisionStep *step) {
  if (!step)
    return;
  g_free(step->name);
  g_strfreev(step->packages);
  g_free(step->script);
  g_free(step->script_path);
  g_free(step->run);
  g_free(step);
}

static void env_var_free(HutchEnvVar *var) {
  if (!var)
    return;
  g_free(var->key);
  g_free(var->value);
  g_free(var);
}

static void image_spec_clear(HutchImageSpec *image) {
  g_free(image->file);
  g_free(image->url);
  g_free(image->digest);
  g_free(image->checksums);
  g_free(image->suite);
  g_strfreev(image->packages);
  g_free(image->mirror);
  memset(image, 0, sizeof(*image));
}

HutchProfile *hutch_profile_new_defaults(void) {
  HutchProfile *p = g_new0(HutchProfile, 1);
  p->cpus = 2;
  p->memory = 4ULL << 30;
  p->disk = 40ULL << 30;
  p->accel = HUTCH_ACCEL_AUTO;
  p->user_uid = -1;
  p->user_sudo = TRUE;
  p->user_shell = g_strdup("/bin/bash");
  p->shares = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_share_free);
  p->ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  p->provision = g_ptr_array_new_with_free_func((GDestroyNotify)provision_step_free);
  p->env = g_ptr_array_new_with_free_func((GDestroyNotify)env_var_free);
  p->boot_timeout = 600;
  return p;
}

void hutch_profile_free(HutchProfile *p) {
  if (!p)
    return;
  g_free(p->name);
  g_free(p->path);
  g_free(p->base);
  image_spec_clear(&p->image);
  g_free(p->user_name);
  g_free(p->user_shell);
  g_ptr_array_unref(p->shares);
  g_ptr_array_unref(p->ports);
  g_ptr_array_unref(p->provision);
  g_ptr_array_unref(p->env);
  g_free(p);
}

const char *hutch_profile_get_name(const HutchProfile *p) {
  return p->name;
}
