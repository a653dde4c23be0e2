/* ready.c: the host side of the ready channel's line protocol (see ready-private.h). */
#include "config.h"

#include "ready-private.h"
#include "text-private.h"

HutchReadyReport *hutch_ready_report_new(HutchContext *ctx) {
  HutchReadyReport *report = g_new0(HutchReadyReport, 1);
  report->ctx = ctx;
  report->optional_failed = g_ptr_array_new_with_free_func(g_free);
  report->warnings = g_ptr_array_new_with_free_func(g_free);
  report->pending = g_string_new(NULL);
  return report;
}

void hutch_ready_report_free(HutchReadyReport *report) {
  if (!report)
    return;
  g_free(report->failed_step);
  g_ptr_array_unref(report->optional_failed);
  g_ptr_array_unref(report->warnings);
  g_string_free(report->pending, TRUE);
  g_free(report);
}

gboolean hutch_failed_step_parse(const char *text, HutchFailedStep *out) {
  g_auto(GStrv) fields = g_strsplit(text, " ", 4);
  if (g_strv_length(fields) < 3 || !*fields[0] || !*fields[1] || !*fields[2])
    return FALSE;
  out->index = g_strdup(fields[0]);
  out->name = g_strdup(fields[1]);
  out->status = g_strdup(fields[2]);
  out->reason = g_strdup(fields[3] && *fields[3] ? fields[3] : "no reason given");
  return TRUE;
}

void hutch_failed_step_clear(HutchFailedStep *step) {
  g_free(step->index);
  g_free(step->name);
  g_free(step->status);
  g_free(step->reason);
  memset(step, 0, sizeof(*step));
}

void hutch_failed_step_free(HutchFailedStep *step) {
  if (!step)
    return;
  hutch_failed_step_clear(step);
  g_free(step);
}

/* Parses sanitised text and cuts each field to its bound: what hutch keeps of a step. */
static gboolean failed_step_parse_bounded(const char *text, HutchFailedStep *out) {
  if (!hutch_failed_step_parse(text, out))
    return FALSE;
  hutch_text_truncate(out->index, HUTCH_READY_FIELD_MAX);
  hutch_text_truncate(out->name, HUTCH_READY_FIELD_MAX);
  hutch_text_truncate(out->status, HUTCH_READY_FIELD_MAX);
  hutch_text_truncate(out->reason, HUTCH_READY_REASON_MAX);
  return TRUE;
}

/* The kept form of a FAIL line's text, or NULL when it names no step. */
static char *failed_step_bounded(const char *text) {
  HutchFailedStep step = {0};
  if (!failed_step_parse_bounded(text, &step))
    return NULL;
  char *kept = g_strdup_printf("%s %s %s %s", step.index, step.name, step.status, step.reason);
  hutch_failed_step_clear(&step);
  return kept;
}

static void keep_optional_failure(HutchReadyReport *report) {
  g_autofree char *failed = g_steal_pointer(&report->failed_step);
  if (report->optional_failed->len < HUTCH_READY_FAILED_MAX)
    g_ptr_array_add(report->optional_failed, g_steal_pointer(&failed));
  else if (report->optional_failed_more < G_MAXUINT)
    report->optional_failed_more++;
}

/* One complete line (without its newline), as the guest sent it. */
static HutchReadyState report_line(HutchReadyReport *report, const char *bytes, gsize len) {
  while (len > 0 && g_ascii_isspace(bytes[0])) {
    bytes++;
    len--;
  }
  while (len > 0 && g_ascii_isspace(bytes[len - 1]))
    len--;
  if (len == 0)
    return HUTCH_READY_WAITING;
  /* What the guest sends ends up on the user's terminal and in the instance's files. */
  g_autofree char *line = hutch_text_sanitize(bytes, (gssize)len, HUTCH_TEXT_LINE);
  if (!report->booted) {
    report->booted = TRUE;
    hutch_progress_end(report->ctx, "boot", "kernel up, cloud-init running");
  }
  gboolean step = g_str_has_prefix(line, "STEP ");
  gboolean ready = strcmp(line, "READY") == 0;
  /* A FAIL followed by another STEP or by READY was an optional step's. */
  if ((step || ready) && report->failed_step)
    keep_optional_failure(report);
  if (step) {
    if (!report->provisioning)
      hutch_progress_begin(report->ctx, "provision", "%s", line + 5);
    else
      hutch_progress_update(report->ctx, "provision", -1, "%s", line + 5);
    report->provisioning = TRUE;
  } else if (g_str_has_prefix(line, "FAIL ")) {
    g_free(report->failed_step);
    report->failed_step = failed_step_bounded(line + 5);
  } else if (g_str_has_prefix(line, "WARN ")) {
    char *kept = g_strstrip(g_strdup(line + 5));
    hutch_text_truncate(kept, HUTCH_READY_REASON_MAX);
    /* A guest may send them for the whole boot: only the kept ones reach the terminal. The
     * one a start acts on (its sshd failed: SSH gets 5 s) is kept past them, once: the guest
     * sends it last, after a warning for each share that failed to mount. */
    gboolean acted_on = strcmp(kept, HUTCH_READY_WARN_SSHD_FAILED) == 0 &&
                        !hutch_ready_report_has_warning(report, kept);
    if (report->warnings->len < HUTCH_READY_WARNINGS_MAX || acted_on) {
      hutch_progress_note(report->ctx, "warning from the guest: %s", line + 5);
      g_ptr_array_add(report->warnings, kept);
    } else {
      g_free(kept);
      if (report->warnings_more < G_MAXUINT)
        report->warnings_more++;
    }
  } else if (ready) {
    if (report->provisioning)
      hutch_progress_end(report->ctx, "provision", "all steps done");
    report->provisioning = FALSE;
    return HUTCH_READY_OK;
  } else if (strcmp(line, "FAILED") == 0) {
    return HUTCH_READY_FAILED;
  }
  return HUTCH_READY_WAITING;
}

HutchReadyState hutch_ready_report_feed(HutchReadyReport *report, const char *bytes, gsize len) {
  while (len > 0) {
    const char *newline = memchr(bytes, '\n', len);
    gsize part = newline ? (gsize)(newline - bytes) : len;
    /* The guest does not get to grow this without end: past the limit, the line is dropped
     * and so is the rest of it, up to its newline. */
    if (!report->discarding && report->pending->len + part > HUTCH_READY_LINE_MAX) {
      report->discarding = TRUE;
      g_string_truncate(report->pending, 0);
    }
    if (!report->discarding)
      g_string_append_len(report->pending, bytes, (gssize)part);
    if (!newline)
      break;
    bytes += part + 1;
    len -= part + 1;
    if (report->discarding) {
      report->discarding = FALSE;
      continue;
    }
    HutchReadyState state = report_line(report, report->pending->str, report->pending->len);
    g_string_truncate(report->pending, 0);
    if (state != HUTCH_READY_WAITING)
      return state;
  }
  return HUTCH_READY_WAITING;
}

void hutch_ready_report_set_error(const HutchReadyReport *report, const char *instance_name,
                                  GError **error) {
  HutchFailedStep failed = {0};
  if (report->failed_step && hutch_failed_step_parse(report->failed_step, &failed))
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROVISION,
                "provisioning step %s (%s) failed with status %s: %s; the VM is kept for "
                "inspection: hutch logs %s, hutch shell %s",
                failed.name, failed.index, failed.status, failed.reason, instance_name,
                instance_name);
  else
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROVISION,
                "provisioning failed; the VM is kept for inspection: hutch logs %s, hutch shell %s",
                instance_name, instance_name);
  hutch_failed_step_clear(&failed);
}

char *hutch_ready_report_summary(const HutchReadyReport *report, const char *instance_name) {
  if (report->optional_failed->len == 0)
    return NULL;
  g_autoptr(GString) names = g_string_new(NULL);
  g_autoptr(GString) reasons = g_string_new(NULL);
  for (guint i = 0; i < report->optional_failed->len; i++) {
    HutchFailedStep failed = {0};
    if (!hutch_failed_step_parse(report->optional_failed->pdata[i], &failed))
      continue;
    g_string_append_printf(names, "%s%s", names->len ? ", " : "", failed.name);
    g_string_append_printf(reasons, "\n  %s: %s", failed.name, failed.reason);
    hutch_failed_step_clear(&failed);
  }
  if (report->optional_failed_more)
    g_string_append_printf(names, " and %u more", report->optional_failed_more);
  guint64 n = (guint64)report->optional_failed->len + report->optional_failed_more;
  return g_strdup_printf("ready, with %" G_GUINT64_FORMAT " optional step%s failed: %s (hutch "
                         "logs %s)%s",
                         n, n == 1 ? "" : "s", names->str, instance_name, reasons->str);
}

char *hutch_ready_report_warnings(const HutchReadyReport *report) {
  if (report->warnings->len == 0)
    return NULL;
  GString *text = g_string_new(NULL);
  for (guint i = 0; i < report->warnings->len; i++)
    g_string_append_printf(text, "%s%s", i ? "; " : "", (const char *)report->warnings->pdata[i]);
  if (report->warnings_more)
    g_string_append_printf(text, " and %u more", report->warnings_more);
  return g_string_free(text, FALSE);
}

void hutch_ready_report_end(HutchReadyReport *report) {
  if (report->warnings_more && !report->warnings_more_shown)
    hutch_progress_note(report->ctx, "%u more warning%s from the guest %s not shown",
                        report->warnings_more, report->warnings_more == 1 ? "" : "s",
                        report->warnings_more == 1 ? "was" : "were");
  report->warnings_more_shown = TRUE;
}

gboolean hutch_ready_report_has_warning(const HutchReadyReport *report, const char *text) {
  for (guint i = 0; i < report->warnings->len; i++)
    if (strcmp(report->warnings->pdata[i], text) == 0)
      return TRUE;
  return FALSE;
}

char *hutch_ready_report_failed_text(const HutchReadyReport *report) {
  if (report->optional_failed->len == 0)
    return NULL;
  GString *text = g_string_new(NULL);
  for (guint i = 0; i < report->optional_failed->len; i++)
    g_string_append_printf(text, "%s\n", (const char *)report->optional_failed->pdata[i]);
  if (report->optional_failed_more)
    g_string_append_printf(text, "MORE %u\n", report->optional_failed_more);
  return g_string_free(text, FALSE);
}

GPtrArray *hutch_failed_steps_from_text(const char *text, gsize len, guint *ret_more) {
  GPtrArray *steps = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_failed_step_free);
  guint64 more = 0;
  const char *end = text + len;
  while (text < end) {
    const char *newline = memchr(text, '\n', (gsize)(end - text));
    gsize line_len = newline ? (gsize)(newline - text) : (gsize)(end - text);
    g_autofree char *line = hutch_text_sanitize(text, (gssize)line_len, HUTCH_TEXT_LINE);
    text += line_len + (newline ? 1 : 0);
    g_strstrip(line);
    guint64 count = 0;
    if (g_str_has_prefix(line, "MORE ") &&
        g_ascii_string_to_unsigned(line + 5, 10, 0, G_MAXUINT, &count, NULL)) {
      more += count;
      continue;
    }
    g_autoptr(HutchFailedStep) step = g_new0(HutchFailedStep, 1);
    if (!failed_step_parse_bounded(line, step))
      continue;
    if (steps->len < HUTCH_READY_FAILED_MAX)
      g_ptr_array_add(steps, g_steal_pointer(&step));
    else
      more++;
  }
  *ret_more = (guint)MIN(more, G_MAXUINT);
  return steps;
}
