/* ready-private.h: the host side of the ready channel's line protocol (the guest side is
 * cloud-init/hutch-provision.sh):
 *   STEP i/n NAME | OK i NAME | FAIL i NAME STATUS REASON | WARN TEXT | READY | FAILED
 * A FAIL followed by another STEP or by READY was an optional step's. Kept apart from the
 * socket handling in instance.c so that tests can feed it lines. */
#pragma once

#include "context-private.h"

typedef enum { HUTCH_READY_WAITING, HUTCH_READY_OK, HUTCH_READY_FAILED } HutchReadyState;

typedef struct {
  HutchContext *ctx;         /* progress goes here; may be NULL */
  gboolean booted;           /* the guest said anything: kernel and cloud-init are up */
  gboolean provisioning;     /* a provisioning phase is open */
  char *failed_step;         /* "INDEX NAME STATUS REASON" of a FAIL not yet known optional */
  GPtrArray *optional_failed; /* the same form, one a failed optional step */
} HutchReadyReport;

HutchReadyReport *hutch_ready_report_new(HutchContext *ctx);
void hutch_ready_report_free(HutchReadyReport *report);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchReadyReport, hutch_ready_report_free)

/* Takes one line (without its newline; control characters in it are replaced by '?', since
 * it comes from a guest that may be hostile and may reach a terminal) and says whether the
 * guest is ready, failed or still working. Unknown lines are ignored. */
HutchReadyState hutch_ready_report_line(HutchReadyReport *report, char *line);

/* After HUTCH_READY_FAILED: the error naming the failed step and its reason. */
void hutch_ready_report_set_error(const HutchReadyReport *report, const char *instance_name,
                                  GError **error);

/* After HUTCH_READY_OK: "ready, with N optional steps failed: a, b (hutch logs VM)" and a
 * line "  NAME: REASON" for each, or NULL when none failed. */
char *hutch_ready_report_summary(const HutchReadyReport *report, const char *instance_name);

/* A FAIL line's "INDEX NAME STATUS REASON", also the format of the instance's optional-failed
 * file. */
typedef struct {
  char *index;
  char *name;
  char *status;
  char *reason; /* "no reason given" when the line has none */
} HutchFailedStep;

gboolean hutch_failed_step_parse(const char *text, HutchFailedStep *out);
void hutch_failed_step_clear(HutchFailedStep *step);
