/* ready-private.h: the host side of the ready channel's line protocol (the guest side is
 * cloud-init/hutch-provision.sh):
 *   STEP i/n NAME | OK i NAME | FAIL i NAME STATUS REASON | WARN TEXT | READY | FAILED
 * A FAIL followed by another STEP or by READY was an optional step's. Kept apart from the
 * socket handling in instance.c so that tests can feed it bytes.
 *
 * The guest may be hostile: every line is sanitised (text-private.h) before it is looked at,
 * and what is kept of it is bounded, however much the guest sends. */
#pragma once

#include "context-private.h"

/* A line longer than this (without its newline) is dropped, up to its newline. */
#define HUTCH_READY_LINE_MAX 4096
/* Failed optional steps kept; more are only counted. */
#define HUTCH_READY_FAILED_MAX 64
/* A kept step's reason is cut to this many bytes, its index, name and status to ..._FIELD_MAX
 * (at a character boundary). */
#define HUTCH_READY_REASON_MAX 512
#define HUTCH_READY_FIELD_MAX 64
/* WARN lines kept and shown (each kept one cut to HUTCH_READY_REASON_MAX): later ones are
 * only counted. */
#define HUTCH_READY_WARNINGS_MAX 8

/* The warning a guest sends with READY when its sshd failed at this boot (its unit failed,
 * or systemd was still restarting it after 20 s): the start waits a few seconds for SSH
 * instead of a minute, then fails saying why. (A guest that lies only makes its own start
 * fail sooner.) */
#define HUTCH_READY_WARN_SSHD_FAILED "ssh.service failed at this boot"

typedef enum { HUTCH_READY_WAITING, HUTCH_READY_OK, HUTCH_READY_FAILED } HutchReadyState;

typedef struct {
  HutchContext *ctx;          /* progress goes here; may be NULL */
  gboolean booted;            /* the guest said anything: kernel and cloud-init are up */
  gboolean provisioning;      /* a provisioning phase is open */
  char *failed_step;          /* "INDEX NAME STATUS REASON" of a FAIL not yet known optional */
  GPtrArray *optional_failed; /* the same form, one a failed optional step (at most
                                 HUTCH_READY_FAILED_MAX) */
  guint optional_failed_more; /* failed optional steps beyond those */
  GPtrArray *warnings;        /* the first HUTCH_READY_WARNINGS_MAX WARN lines' texts, and
                               * HUTCH_READY_WARN_SSHD_FAILED past them (once) */
  guint warnings_more;        /* WARN lines beyond those, neither kept nor shown */
  gboolean warnings_more_shown; /* hutch_ready_report_end said how many */
  GString *pending;           /* the bytes of a line whose newline has not come yet */
  gboolean discarding;        /* the line being received is too long: dropped to its newline */
} HutchReadyReport;

HutchReadyReport *hutch_ready_report_new(HutchContext *ctx);
void hutch_ready_report_free(HutchReadyReport *report);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchReadyReport, hutch_ready_report_free)

/* Takes the next len bytes the guest sent, in whatever pieces they arrived, and says whether
 * the guest is ready, failed or still working. Each complete line is stripped of surrounding
 * white space and sanitised (HUTCH_TEXT_LINE); empty and unknown lines are ignored, and so is
 * everything after the line that made the state other than HUTCH_READY_WAITING. */
HutchReadyState hutch_ready_report_feed(HutchReadyReport *report, const char *bytes, gsize len);

/* After HUTCH_READY_FAILED: the error naming the failed step and its reason. */
void hutch_ready_report_set_error(const HutchReadyReport *report, const char *instance_name,
                                  GError **error);

/* After HUTCH_READY_OK: "ready, with N optional steps failed: a, b (hutch logs VM)" ("a, b and
 * M more" beyond the kept ones) and a line "  NAME: REASON" for each kept one, or NULL when
 * none failed. */
char *hutch_ready_report_summary(const HutchReadyReport *report, const char *instance_name);

/* The guest's warnings (WARN lines), kept for an error that comes later (SSH did not answer
 * after READY): "W1; W2" ("W1; ... W8 and N more" beyond the kept ones), or NULL when it sent
 * none. */
char *hutch_ready_report_warnings(const HutchReadyReport *report);

/* Once the boot is over (ready, failed, timed out or stopped): a progress note saying how
 * many of the guest's warnings were neither kept nor shown, if any; only the first call says
 * it. */
void hutch_ready_report_end(HutchReadyReport *report);

/* Whether one of the kept warnings is exactly text (after the sanitising every line gets). */
gboolean hutch_ready_report_has_warning(const HutchReadyReport *report, const char *text);

/* The instance's optional-failed file: a line "INDEX NAME STATUS REASON" per kept step, then
 * "MORE N" when more failed (older readers skip that line: it is no step). NULL when none
 * failed. */
char *hutch_ready_report_failed_text(const HutchReadyReport *report);

/* A FAIL line's "INDEX NAME STATUS REASON", also the format of the optional-failed file. */
typedef struct {
  char *index;
  char *name;
  char *status;
  char *reason; /* "no reason given" when the line has none */
} HutchFailedStep;

gboolean hutch_failed_step_parse(const char *text, HutchFailedStep *out);
void hutch_failed_step_clear(HutchFailedStep *step);
void hutch_failed_step_free(HutchFailedStep *step);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchFailedStep, hutch_failed_step_free)

/* Reads an optional-failed file's text back (len bytes): the steps as HutchFailedStep*, at
 * most HUTCH_READY_FAILED_MAX, sanitised and cut as when they were kept (the file may come
 * from an older hutch that kept them as the guest sent them), and in *ret_more the count of
 * the others. */
GPtrArray *hutch_failed_steps_from_text(const char *text, gsize len, guint *ret_more);
