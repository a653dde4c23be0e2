/* test-ready.c: the host side of the ready channel's protocol, fed the lines a guest sends
 * (cloud-init/hutch-provision.sh writes them; test-seed.c checks that side). */
#include "config.h"

#include "ready-private.h"

/* Every progress event, one "KIND PHASE DETAIL" line each. */
static void record(const HutchProgress *p, gpointer user_data) {
  static const char *const kinds[] = {"begin", "update", "end", "note"};
  g_string_append_printf(user_data, "%s %s %s\n", kinds[p->kind], p->phase ? p->phase : "-",
                         p->detail ? p->detail : "");
}

/* Feeds the lines (each copied: the report edits them in place) and returns the last state. */
static HutchReadyState feed(HutchReadyReport *report, const char *const *lines) {
  HutchReadyState state = HUTCH_READY_WAITING;
  for (guint i = 0; lines[i]; i++) {
    g_assert_cmpint(state, ==, HUTCH_READY_WAITING);
    g_autofree char *line = g_strdup(lines[i]);
    state = hutch_ready_report_line(report, line);
  }
  return state;
}

static void test_optional_failures(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  g_autoptr(GString) events = g_string_new(NULL);
  hutch_context_set_progress(ctx, record, events);
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(ctx);
  /* A guest that may be hostile: an escape sequence and a bell in a reason and a warning. */
  const char *const lines[] = {"STEP 1/4 tools",
                               "OK 1 tools",
                               "STEP 2/4 go",
                               "FAIL 2 go 1 hutch-go: error: go.dev unreachable",
                               "WARN mount /x failed\x1b[2J",
                               "STEP 3/4 gh",
                               "FAIL 3 gh 100 \x1b]0;pwned\x07 E: no",
                               "STEP 4/4 last",
                               "a line no one knows",
                               "FAIL 4 last 2",
                               "READY",
                               NULL};
  g_assert_cmpint(feed(report, lines), ==, HUTCH_READY_OK);
  g_assert_cmpuint(report->optional_failed->len, ==, 3);
  g_assert_cmpstr(report->optional_failed->pdata[0], ==,
                  "2 go 1 hutch-go: error: go.dev unreachable");
  g_assert_cmpstr(report->optional_failed->pdata[1], ==, "3 gh 100 ?]0;pwned? E: no");
  g_assert_cmpstr(report->optional_failed->pdata[2], ==, "4 last 2");
  g_autofree char *summary = hutch_ready_report_summary(report, "dev");
  g_assert_cmpstr(summary, ==,
                  "ready, with 3 optional steps failed: go, gh, last (hutch logs dev)\n"
                  "  go: hutch-go: error: go.dev unreachable\n"
                  "  gh: ?]0;pwned? E: no\n"
                  "  last: no reason given");
  g_assert_cmpstr(events->str, ==,
                  "end boot kernel up, cloud-init running\n"
                  "begin provision 1/4 tools\n"
                  "update provision 2/4 go\n"
                  "note - warning from the guest: mount /x failed?[2J\n"
                  "update provision 3/4 gh\n"
                  "update provision 4/4 last\n"
                  "end provision all steps done\n");
  for (const char *c = events->str; *c; c++)
    g_assert_true(*c == '\n' || !g_ascii_iscntrl(*c));
}

static void test_all_well(void) {
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  const char *const lines[] = {"STEP 1/1 a", "OK 1 a", "READY", NULL};
  g_assert_cmpint(feed(report, lines), ==, HUTCH_READY_OK);
  g_assert_null(hutch_ready_report_summary(report, "dev"));
  /* later boots: READY alone */
  g_autoptr(HutchReadyReport) later = hutch_ready_report_new(NULL);
  const char *const ready[] = {"READY", NULL};
  g_assert_cmpint(feed(later, ready), ==, HUTCH_READY_OK);
}

static void test_required_failure(void) {
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  const char *const lines[] = {"STEP 1/3 a", "FAIL 1 a 3 x", "STEP 2/3 b",
                               "FAIL 2 b 7 hutch-b: error: gave up", "FAILED", NULL};
  g_assert_cmpint(feed(report, lines), ==, HUTCH_READY_FAILED);
  g_autoptr(GError) error = NULL;
  hutch_ready_report_set_error(report, "dev", &error);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROVISION);
  g_assert_cmpstr(error->message, ==,
                  "provisioning step b (2) failed with status 7: hutch-b: error: gave up; the "
                  "VM is kept for inspection: hutch logs dev, hutch shell dev");
  /* the step before it was optional */
  g_assert_cmpuint(report->optional_failed->len, ==, 1);

  /* FAILED again on a later boot, with no FAIL line before it */
  g_autoptr(HutchReadyReport) later = hutch_ready_report_new(NULL);
  const char *const failed[] = {"FAILED", NULL};
  g_assert_cmpint(feed(later, failed), ==, HUTCH_READY_FAILED);
  g_autoptr(GError) error2 = NULL;
  hutch_ready_report_set_error(later, "dev", &error2);
  g_assert_cmpstr(error2->message, ==,
                  "provisioning failed; the VM is kept for inspection: hutch logs dev, "
                  "hutch shell dev");
}

static void test_failed_step_parse(void) {
  HutchFailedStep step = {0};
  g_assert_true(hutch_failed_step_parse("12 claude-code 1 it needs  Node.js >=22", &step));
  g_assert_cmpstr(step.index, ==, "12");
  g_assert_cmpstr(step.name, ==, "claude-code");
  g_assert_cmpstr(step.status, ==, "1");
  g_assert_cmpstr(step.reason, ==, "it needs  Node.js >=22");
  hutch_failed_step_clear(&step);
  g_assert_null(step.name);
  const char *bad[] = {"", "1", "1 name", "1  2", NULL};
  for (guint i = 0; bad[i]; i++) {
    g_assert_false(hutch_failed_step_parse(bad[i], &step));
    g_assert_null(step.name);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ready/optional-failures", test_optional_failures);
  g_test_add_func("/ready/all-well", test_all_well);
  g_test_add_func("/ready/required-failure", test_required_failure);
  g_test_add_func("/ready/failed-step-parse", test_failed_step_parse);
  return g_test_run();
}
