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

/* Feeds the lines, each with its newline, and returns the last state. */
static HutchReadyState feed(HutchReadyReport *report, const char *const *lines) {
  HutchReadyState state = HUTCH_READY_WAITING;
  for (guint i = 0; lines[i]; i++) {
    g_assert_cmpint(state, ==, HUTCH_READY_WAITING);
    g_autofree char *line = g_strconcat(lines[i], "\n", NULL);
    state = hutch_ready_report_feed(report, line, strlen(line));
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
  g_assert_cmpstr(report->optional_failed->pdata[2], ==, "4 last 2 no reason given");
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

/* The guest's warnings are kept for a later error: sanitised, at most
 * HUTCH_READY_WARNINGS_MAX of them, each cut to HUTCH_READY_REASON_MAX bytes. */
static void test_warnings_kept(void) {
  g_autoptr(HutchReadyReport) quiet = hutch_ready_report_new(NULL);
  const char *const ready[] = {"READY", NULL};
  g_assert_cmpint(feed(quiet, ready), ==, HUTCH_READY_OK);
  g_assert_null(hutch_ready_report_warnings(quiet));

  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  const char *const two[] = {"WARN no identity\x1b[2J", "WARN   second  ", NULL};
  g_assert_cmpint(feed(report, two), ==, HUTCH_READY_WAITING);
  g_autofree char *text = hutch_ready_report_warnings(report);
  g_assert_cmpstr(text, ==, "no identity?[2J; second");
  /* a warning is one of them only when it is the whole of one (the start's shorter SSH wait
   * when sshd failed: not a share path that holds the words) */
  g_assert_true(hutch_ready_report_has_warning(report, "second"));
  g_assert_false(hutch_ready_report_has_warning(report, "no identity"));
  g_assert_false(hutch_ready_report_has_warning(report, HUTCH_READY_WARN_SSHD_FAILED));
  g_autoptr(HutchReadyReport) sshd = hutch_ready_report_new(NULL);
  const char *const in_path[] = {"WARN mount /x/" HUTCH_READY_WARN_SSHD_FAILED " failed", NULL};
  g_assert_cmpint(feed(sshd, in_path), ==, HUTCH_READY_WAITING);
  g_assert_false(hutch_ready_report_has_warning(sshd, HUTCH_READY_WARN_SSHD_FAILED));
  const char *const failed[] = {"WARN " HUTCH_READY_WARN_SSHD_FAILED, "READY", NULL};
  g_assert_cmpint(feed(sshd, failed), ==, HUTCH_READY_OK);
  g_assert_true(hutch_ready_report_has_warning(sshd, HUTCH_READY_WARN_SSHD_FAILED));

  g_autoptr(HutchReadyReport) flooded = hutch_ready_report_new(NULL);
  g_autofree char *long_text = g_strnfill(3000, 'w');
  for (guint i = 0; i < 1000; i++) {
    g_autofree char *line = g_strdup_printf("WARN %u %s\n", i, long_text);
    g_assert_cmpint(hutch_ready_report_feed(flooded, line, strlen(line)), ==, HUTCH_READY_WAITING);
  }
  g_assert_cmpuint(flooded->warnings->len, ==, HUTCH_READY_WARNINGS_MAX);
  g_autofree char *all = hutch_ready_report_warnings(flooded);
  /* and " and 992 more" */
  g_assert_cmpuint(strlen(all), <=, HUTCH_READY_WARNINGS_MAX * (HUTCH_READY_REASON_MAX + 2) + 32);
  g_assert_true(g_str_has_prefix(all, "0 www"));
  g_assert_true(g_str_has_suffix(all, " and 992 more"));
}

/* A guest that sends WARN lines for the whole boot does not flood the terminal: the kept
 * ones are shown, then one note says how many more were not, once the boot is over. */
static void test_warnings_shown_bounded(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  g_autoptr(GString) events = g_string_new(NULL);
  hutch_context_set_progress(ctx, record, events);
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(ctx);
  const guint flood = 1000;
  for (guint i = 0; i < flood; i++) {
    g_autofree char *line = g_strdup_printf("WARN w%u\n", i);
    g_assert_cmpint(hutch_ready_report_feed(report, line, strlen(line)), ==, HUTCH_READY_WAITING);
  }
  g_assert_cmpint(hutch_ready_report_feed(report, "READY\n", 6), ==, HUTCH_READY_OK);
  hutch_ready_report_end(report);
  g_auto(GStrv) lines = g_strsplit(events->str, "\n", -1);
  guint notes = 0;
  for (guint i = 0; lines[i]; i++)
    if (g_str_has_prefix(lines[i], "note "))
      notes++;
  g_assert_cmpuint(notes, ==, HUTCH_READY_WARNINGS_MAX + 1);
  g_assert_nonnull(strstr(events->str, "note - warning from the guest: w7\n"));
  g_assert_null(strstr(events->str, "w8"));
  g_autofree char *more = g_strdup_printf("note - %u more warnings from the guest were not shown\n",
                                          flood - HUTCH_READY_WARNINGS_MAX);
  g_assert_true(g_str_has_suffix(events->str, more));
  /* the error that may come later says so too */
  g_autofree char *kept = hutch_ready_report_warnings(report);
  g_autofree char *kept_more =
      g_strdup_printf("; w7 and %u more", flood - HUTCH_READY_WARNINGS_MAX);
  g_assert_true(g_str_has_suffix(kept, kept_more));
  /* once */
  gsize len = events->len;
  hutch_ready_report_end(report);
  g_assert_cmpuint(events->len, ==, len);
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
  const char *const lines[] = {"STEP 1/3 a", "FAIL 1 a 3 x",
                               "STEP 2/3 b", "FAIL 2 b 7 hutch-b: error: gave up",
                               "FAILED",     NULL};
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

/* Raw C1 controls and UTF-8 encoded ones obey no less than ESC does; invalid UTF-8 is not
 * kept either. */
static void test_c1_and_invalid_utf8(void) {
  g_autoptr(GString) events = g_string_new(NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  hutch_context_set_progress(ctx, record, events);
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(ctx);
  const char *const lines[] = {"WARN \x9b"
                               "2J raw CSI",
                               "WARN \xc2\x9d"
                               "52;c;eA==\xc2\x9c UTF-8 OSC",
                               "STEP 1/1 caf\xc3\xa9",
                               "FAIL 1 caf\xc3\xa9 1 \xc0\xaf overlong \xe2\x80\xae bidi \xe6\x97",
                               "READY",
                               NULL};
  g_assert_cmpint(feed(report, lines), ==, HUTCH_READY_OK);
  g_assert_cmpstr(report->optional_failed->pdata[0], ==, "1 caf\xc3\xa9 1 ?? overlong ? bidi ??");
  g_assert_cmpstr(events->str, ==,
                  "end boot kernel up, cloud-init running\n"
                  "note - warning from the guest: ?2J raw CSI\n"
                  "note - warning from the guest: ?52;c;eA==? UTF-8 OSC\n"
                  "begin provision 1/1 caf\xc3\xa9\n"
                  "end provision all steps done\n");
}

/* Lines arrive in whatever pieces the socket gives: byte by byte is the same as whole. */
static void test_pieces(void) {
  static const char bytes[] =
      "  STEP 1/2 a \r\n\nFAIL 1 a 3 x\nSTEP 2/2 b\nREADY\nSTEP 9/9 after\n";
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  HutchReadyState state = HUTCH_READY_WAITING;
  gsize i;
  for (i = 0; i < sizeof(bytes) - 1 && state == HUTCH_READY_WAITING; i++)
    state = hutch_ready_report_feed(report, bytes + i, 1);
  g_assert_cmpint(state, ==, HUTCH_READY_OK);
  g_assert_cmpstr(bytes + i, ==, "STEP 9/9 after\n");
  g_assert_cmpuint(report->optional_failed->len, ==, 1);
  g_assert_cmpstr(report->optional_failed->pdata[0], ==, "1 a 3 x");

  /* whole: what follows READY is ignored */
  g_autoptr(HutchReadyReport) whole = hutch_ready_report_new(NULL);
  g_assert_cmpint(hutch_ready_report_feed(whole, bytes, sizeof(bytes) - 1), ==, HUTCH_READY_OK);
  g_assert_cmpuint(whole->optional_failed->len, ==, 1);
  g_assert_false(whole->provisioning);
}

/* A line longer than HUTCH_READY_LINE_MAX is dropped whole, up to its newline, however it
 * arrives: it is not read as two lines, and it does not grow the buffer. */
static void test_overlong_line(void) {
  for (gsize piece = 1; piece <= 8192; piece *= 4) {
    g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
    /* the overlong line's tail would be a READY of its own if it were split at the limit */
    g_autoptr(GString) bytes = g_string_new("STEP 1/1 a\nFAIL 1 a 1 ");
    while (bytes->len < HUTCH_READY_LINE_MAX + 11)
      g_string_append_c(bytes, 'x');
    g_string_truncate(bytes, HUTCH_READY_LINE_MAX + 11);
    g_string_append(bytes, "READY\nFAIL 1 a 2 short\n");
    HutchReadyState state = HUTCH_READY_WAITING;
    for (gsize at = 0; at < bytes->len; at += piece) {
      state = hutch_ready_report_feed(report, bytes->str + at, MIN(piece, bytes->len - at));
      g_assert_cmpint(state, ==, HUTCH_READY_WAITING);
      g_assert_cmpuint(report->pending->len, <=, HUTCH_READY_LINE_MAX);
    }
    g_assert_false(report->discarding);
    g_assert_cmpstr(report->failed_step, ==, "1 a 2 short");
    const char ready[] = "READY\n";
    g_assert_cmpint(hutch_ready_report_feed(report, ready, strlen(ready)), ==, HUTCH_READY_OK);
  }
  /* exactly HUTCH_READY_LINE_MAX is still a line */
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  g_autoptr(GString) line = g_string_new("FAIL 1 a 1 ");
  while (line->len < HUTCH_READY_LINE_MAX)
    g_string_append_c(line, 'y');
  g_string_append_c(line, '\n');
  hutch_ready_report_feed(report, line->str, line->len);
  g_assert_nonnull(report->failed_step);
  /* kept with its reason cut */
  g_assert_cmpuint(strlen(report->failed_step), ==, strlen("1 a 1 ") + HUTCH_READY_REASON_MAX);
}

/* A guest that floods the channel with failed optional steps: what hutch keeps is bounded. */
static void test_flood(void) {
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(NULL);
  g_autoptr(GString) reason = g_string_new(NULL);
  for (guint i = 0; i < 300; i++)
    g_string_append(reason, "\xe6\x97\xa5"); /* 900 bytes of 3-byte characters */
  g_autoptr(GString) name = g_string_new(NULL);
  for (guint i = 0; i < 100; i++)
    g_string_append(name, "n");
  const guint flood = 100000;
  for (guint i = 0; i < flood; i++) {
    g_autofree char *bytes =
        g_strdup_printf("FAIL %u %s%u 1 %s\nSTEP %u/%u x\n", i, name->str, i,
                        /* long ones where they are kept: valgrind need not read 100 MB */
                        i < 2 * HUTCH_READY_FAILED_MAX ? reason->str : "short", i + 1, flood);
    g_assert_cmpint(hutch_ready_report_feed(report, bytes, strlen(bytes)), ==, HUTCH_READY_WAITING);
  }
  g_assert_cmpint(hutch_ready_report_feed(report, "READY\n", 6), ==, HUTCH_READY_OK);
  g_assert_cmpuint(report->optional_failed->len, ==, HUTCH_READY_FAILED_MAX);
  g_assert_cmpuint(report->optional_failed_more, ==, flood - HUTCH_READY_FAILED_MAX);
  for (guint i = 0; i < report->optional_failed->len; i++) {
    const char *kept = report->optional_failed->pdata[i];
    g_assert_cmpuint(strlen(kept), <=, 3 * HUTCH_READY_FIELD_MAX + HUTCH_READY_REASON_MAX + 3);
    g_assert_true(g_utf8_validate(kept, -1, NULL));
    HutchFailedStep step = {0};
    g_assert_true(hutch_failed_step_parse(kept, &step));
    g_assert_cmpuint(strlen(step.name), ==, HUTCH_READY_FIELD_MAX);
    /* cut at a character boundary: 170 characters of 3 bytes */
    g_assert_cmpuint(strlen(step.reason), ==, 510);
    hutch_failed_step_clear(&step);
  }
  g_autofree char *summary = hutch_ready_report_summary(report, "dev");
  g_assert_true(g_str_has_prefix(summary, "ready, with 100000 optional steps failed: "));
  g_assert_nonnull(strstr(summary, " and 99936 more (hutch logs dev)\n"));
  g_assert_cmpuint(strlen(summary), <, 64 * 1024);
  g_autofree char *text = hutch_ready_report_failed_text(report);
  g_assert_true(g_str_has_suffix(text, "\nMORE 99936\n"));
  g_assert_cmpuint(strlen(text), <, 64 * 1024);

  /* read back as `hutch info` does */
  guint more = 0;
  g_autoptr(GPtrArray) steps = hutch_failed_steps_from_text(text, strlen(text), &more);
  g_assert_cmpuint(steps->len, ==, HUTCH_READY_FAILED_MAX);
  g_assert_cmpuint(more, ==, flood - HUTCH_READY_FAILED_MAX);
}

/* The optional-failed file as an older hutch wrote it: whatever the guest sent, unbounded. */
static void test_failed_from_old_text(void) {
  g_autoptr(GString) text = g_string_new("1 a 1 \x1b]52;c;eA==\x07 set the clipboard\n"
                                         "2 b\x9b"
                                         "2J 3 \xc2\x9b"
                                         "31m\n"
                                         "\n"
                                         "garbage\n"
                                         "3 c 7\n"
                                         "MORE 2\n");
  g_string_append(text, "4 long 1 ");
  for (guint i = 0; i < 1000; i++)
    g_string_append_c(text, 'z');
  g_string_append(text, "\n");
  for (guint i = 5; i < 100; i++)
    g_string_append_printf(text, "%u s%u 1 r\n", i, i);
  g_string_append(text, "5 last 1 no newline at the end");
  guint more = 0;
  g_autoptr(GPtrArray) steps = hutch_failed_steps_from_text(text->str, text->len, &more);
  g_assert_cmpuint(steps->len, ==, HUTCH_READY_FAILED_MAX);
  /* 4 + 95 + 1 steps, 64 kept, and MORE 2 */
  g_assert_cmpuint(more, ==, 100 - HUTCH_READY_FAILED_MAX + 2);
  const HutchFailedStep *a = steps->pdata[0], *b = steps->pdata[1], *c = steps->pdata[2],
                        *d = steps->pdata[3];
  g_assert_cmpstr(a->reason, ==, "?]52;c;eA==? set the clipboard");
  g_assert_cmpstr(b->name, ==, "b?2J");
  g_assert_cmpstr(b->reason, ==, "?31m");
  g_assert_cmpstr(c->reason, ==, "no reason given");
  g_assert_cmpuint(strlen(d->reason), ==, HUTCH_READY_REASON_MAX);
}

/* The guest sends its sshd's failure last, after a warning for each share that failed to
 * mount: past the kept ones, it is still kept (the start acts on it) and shown, once. */
static void test_sshd_warning_after_many(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  g_autoptr(GString) events = g_string_new(NULL);
  hutch_context_set_progress(ctx, record, events);
  g_autoptr(HutchReadyReport) report = hutch_ready_report_new(ctx);
  for (guint i = 0; i < HUTCH_READY_WARNINGS_MAX + 1; i++) {
    g_autofree char *line = g_strdup_printf("WARN mount %u failed\n", i);
    hutch_ready_report_feed(report, line, strlen(line));
  }
  const char *sshd = "WARN " HUTCH_READY_WARN_SSHD_FAILED "\n";
  hutch_ready_report_feed(report, sshd, strlen(sshd));
  hutch_ready_report_feed(report, sshd, strlen(sshd));
  g_assert_cmpint(hutch_ready_report_feed(report, "READY\n", 6), ==, HUTCH_READY_OK);
  hutch_ready_report_end(report);
  g_assert_true(hutch_ready_report_has_warning(report, HUTCH_READY_WARN_SSHD_FAILED));
  g_autofree char *shown =
      g_strdup_printf("note - warning from the guest: %s\n", HUTCH_READY_WARN_SSHD_FAILED);
  const char *first = strstr(events->str, shown);
  g_assert_nonnull(first);
  g_assert_null(strstr(first + 1, shown));
  /* the one past the kept ones and the repeat: 2 not shown, "were" */
  g_assert_nonnull(strstr(events->str, "note - 2 more warnings from the guest were not shown\n"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ready/optional-failures", test_optional_failures);
  g_test_add_func("/ready/all-well", test_all_well);
  g_test_add_func("/ready/warnings-kept", test_warnings_kept);
  g_test_add_func("/ready/warnings-shown-bounded", test_warnings_shown_bounded);
  g_test_add_func("/ready/sshd-warning-after-many", test_sshd_warning_after_many);
  g_test_add_func("/ready/required-failure", test_required_failure);
  g_test_add_func("/ready/failed-step-parse", test_failed_step_parse);
  g_test_add_func("/ready/c1-and-invalid-utf8", test_c1_and_invalid_utf8);
  g_test_add_func("/ready/pieces", test_pieces);
  g_test_add_func("/ready/overlong-line", test_overlong_line);
  g_test_add_func("/ready/flood", test_flood);
  g_test_add_func("/ready/failed-from-old-text", test_failed_from_old_text);
  return g_test_run();
}
