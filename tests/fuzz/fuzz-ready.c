/* fuzz-ready: the ready channel's line protocol as a hostile guest may speak it
 * (hutch_ready_report_feed). Input: a chunk size byte, then what the guest sends.
 * Properties: the state, the error, the summary, the warnings and the kept failed steps are
 * the same whether the bytes arrive at once or in chunks; what is kept stays within its
 * bounds and is valid UTF-8; the kept steps' file reads back to as many steps. */
#include <string.h>

#include "fuzz.h"
#include "ready-private.h"

typedef struct {
  HutchReadyState state;
  char *error, *summary, *warnings, *failed_text;
} Outcome;

static void outcome_clear(Outcome *o) {
  g_free(o->error);
  g_free(o->summary);
  g_free(o->warnings);
  g_free(o->failed_text);
}

static gboolean same_text(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void check_text(const char *text) {
  FUZZ_CHECK(text == NULL || g_utf8_validate(text, -1, NULL));
}

static Outcome feed(const char *bytes, gsize len, gsize chunk) {
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  Outcome o = {HUTCH_READY_WAITING, NULL, NULL, NULL, NULL};
  for (gsize at = 0; at < len && o.state == HUTCH_READY_WAITING; at += chunk)
    o.state = hutch_ready_report_feed(report, bytes + at, MIN(chunk, len - at));
  FUZZ_CHECK(report->optional_failed->len <= HUTCH_READY_FAILED_MAX);
  /* the kept ones, and the sshd warning past them, once */
  FUZZ_CHECK(report->warnings->len <= HUTCH_READY_WARNINGS_MAX + 1);
  FUZZ_CHECK(report->pending->len <= HUTCH_READY_LINE_MAX + 1);
  for (guint i = 0; i < report->warnings->len; i++) {
    const char *w = report->warnings->pdata[i];
    FUZZ_CHECK(strlen(w) <= HUTCH_READY_REASON_MAX);
    check_text(w);
  }
  for (guint i = 0; i < report->optional_failed->len; i++) {
    const char *step = report->optional_failed->pdata[i];
    /* index, name and status, each cut, then the reason, and three spaces */
    FUZZ_CHECK(strlen(step) <= 3 * HUTCH_READY_FIELD_MAX + HUTCH_READY_REASON_MAX + 3);
    check_text(step);
  }
  if (o.state == HUTCH_READY_FAILED) {
    g_autoptr(GError) error = NULL;
    hutch_ready_report_set_error(report, "vm", &error);
    FUZZ_CHECK(error != NULL);
    o.error = g_strdup(error->message);
    check_text(o.error);
  }
  o.summary = hutch_ready_report_summary(report, "vm");
  o.warnings = hutch_ready_report_warnings(report);
  o.failed_text = hutch_ready_report_failed_text(report);
  check_text(o.summary);
  check_text(o.warnings);
  check_text(o.failed_text);
  if (o.failed_text) {
    guint more = 0;
    g_autoptr(GPtrArray) back =
        hutch_failed_steps_from_text(o.failed_text, strlen(o.failed_text), &more);
    FUZZ_CHECK(back->len == report->optional_failed->len);
    FUZZ_CHECK(more == report->optional_failed_more);
  }
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  gsize chunk = 1 + data[0] % 64;
  const char *bytes = (const char *)data + 1;
  gsize len = size - 1;
  Outcome whole = feed(bytes, len, MAX(len, 1));
  Outcome pieces = feed(bytes, len, chunk);
  FUZZ_CHECK(whole.state == pieces.state);
  FUZZ_CHECK(same_text(whole.error, pieces.error));
  FUZZ_CHECK(same_text(whole.summary, pieces.summary));
  FUZZ_CHECK(same_text(whole.warnings, pieces.warnings));
  FUZZ_CHECK(same_text(whole.failed_text, pieces.failed_text));
  outcome_clear(&whole);
  outcome_clear(&pieces);

  /* an optional-failed file of any content (an older hutch's, or damaged) */
  guint more = 0;
  g_autoptr(GPtrArray) steps = hutch_failed_steps_from_text(bytes, len, &more);
  FUZZ_CHECK(steps->len <= HUTCH_READY_FAILED_MAX);
  for (guint i = 0; i < steps->len; i++) {
    const HutchFailedStep *step = steps->pdata[i];
    FUZZ_CHECK(step->index && step->name && step->status && step->reason);
    FUZZ_CHECK(strlen(step->reason) <= HUTCH_READY_REASON_MAX);
    FUZZ_CHECK(strlen(step->name) <= HUTCH_READY_FIELD_MAX);
    check_text(step->reason);
    check_text(step->name);
  }
  return 0;
}
