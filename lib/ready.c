/* ready.c: the host side of the ready channel's line protocol (see ready-private.h). */
#include "config.h"

#include "ready-private.h"

HutchReadyReport *hutch_ready_report_new(HutchContext *ctx) {
  HutchReadyReport *report = g_new0(HutchReadyReport, 1);
  report->ctx = ctx;
  report->optional_failed = g_ptr_array_new_with_free_func(g_free);
  return report;
}

void hutch_ready_report_free(HutchReadyReport *report) {
  if (!report)
    return;
  g_free(report->failed_step);
  g_ptr_array_unref(report->optional_failed);
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

/* What the guest sends ends up on the user's terminal: no escape sequences or other control
 * characters from a guest that may be hostile. */
static void replace_control_chars(char *line) {
  for (unsigned char *c = (unsigned char *)line; *c; c++)
    if (*c < 0x20 || *c == 0x7f)
      *c = '?';
}

HutchReadyState hutch_ready_report_line(HutchReadyReport *report, char *line) {
  replace_control_chars(line);
  if (!report->booted) {
    report->booted = TRUE;
    hutch_progress_end(report->ctx, "boot", "kernel up, cloud-init running");
  }
  gboolean step = g_str_has_prefix(line, "STEP ");
  gboolean ready = strcmp(line, "READY") == 0;
  /* A FAIL followed by another STEP or by READY was an optional step's. */
  if ((step || ready) && report->failed_step)
    g_ptr_array_add(report->optional_failed, g_steal_pointer(&report->failed_step));
  if (step) {
    if (!report->provisioning)
      hutch_progress_begin(report->ctx, "provision", "%s", line + 5);
    else
      hutch_progress_update(report->ctx, "provision", -1, "%s", line + 5);
    report->provisioning = TRUE;
  } else if (g_str_has_prefix(line, "FAIL ")) {
    g_free(report->failed_step);
    report->failed_step = g_strdup(line + 5);
  } else if (g_str_has_prefix(line, "WARN ")) {
    hutch_progress_note(report->ctx, "warning from the guest: %s", line + 5);
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
  guint n = report->optional_failed->len;
  return g_strdup_printf("ready, with %u optional step%s failed: %s (hutch logs %s)%s", n,
                         n == 1 ? "" : "s", names->str, instance_name, reasons->str);
}
