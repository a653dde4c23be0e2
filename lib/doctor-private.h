/* doctor-private.h: the checks of `hutch doctor`, parametrised by where they look so that
 * tests can run them against a fake host. */
#pragma once

#include "context-private.h"

typedef struct {
  const char *root;        /* prefix of /dev, /sys, /proc and /etc ("" for the host's own) */
  const char *path;        /* the PATH programs are looked up in */
  const char *runtime_dir; /* $XDG_RUNTIME_DIR, NULL when unset */
  const char *cache_dir;   /* where images are cached (may not exist yet) */
  const char *user;        /* the user's name and uid, for /etc/subuid */
  guint32 uid;
  guint64 min_free; /* bytes the cache's filesystem should have free */
  guint64 nofile_hard; /* the hard limit on open files (RLIMIT_NOFILE) hutch runs with */
  const char *instances_dir; /* $XDG_DATA_HOME/hutch/instances */
  const char *config_dir;    /* $XDG_CONFIG_HOME: where a session daemon of ours keeps domains */
} HutchDoctorEnv;

/* Runs every check and returns an array of {"check", "ok", "severity" ("info", "warning" or
 * "error"), "detail", "fix" (absent when ok)} objects in a fixed order. ctx NULL: the
 * libvirt and instances checks are skipped. Never fails: a check that cannot be made is a
 * failed check. */
JsonArray *hutch_doctor_run(HutchContext *ctx, const HutchDoctorEnv *env);
