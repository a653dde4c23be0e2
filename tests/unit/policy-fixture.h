/* policy-fixture.h: an egress policy built for a test (test-egress.c, test-broker.c). */
#pragma once

#include "egress-private.h"

/* A policy of mode with the allow and deny rules (NULL-terminated, may be NULL); a rule
 * that does not parse fails the test. */
static inline HutchEgressPolicy *policy_of(HutchEgressMode mode, const char *const *allow,
                                           const char *const *deny) {
  HutchEgressPolicy *policy = hutch_egress_policy_new(mode);
  for (const char *const *t = allow; t && *t; t++) {
    g_autoptr(GError) error = NULL;
    g_assert_true(hutch_egress_policy_add(policy, FALSE, *t, &error));
    g_assert_no_error(error);
  }
  for (const char *const *t = deny; t && *t; t++) {
    g_autoptr(GError) error = NULL;
    g_assert_true(hutch_egress_policy_add(policy, TRUE, *t, &error));
    g_assert_no_error(error);
  }
  return policy;
}
