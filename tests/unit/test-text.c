/* test-text.c: the one sanitiser for guest text, whole and in chunks. */
#include "config.h"

#include "text-private.h"

typedef struct {
  const char *what;
  const char *in;
  gssize len;        /* -1: strlen */
  const char *line;  /* HUTCH_TEXT_LINE */
  const char *lines; /* HUTCH_TEXT_LINES; NULL: as line */
} Case;

static const Case cases[] = {
    {"plain ASCII", "hello, world ~!", -1, "hello, world ~!", NULL},
    {"empty", "", -1, "", NULL},
    {"printable UTF-8", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xc2\xa0\xc2\xa9",
     -1, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xc2\xa0\xc2\xa9", NULL},
    {"largest code points", "\xef\xbf\xbd \xf4\x8f\xbf\xbf \xed\x9f\xbf", -1,
     "\xef\xbf\xbd \xf4\x8f\xbf\xbf \xed\x9f\xbf", NULL},
    {"newline and tab", "a\tb\nc", -1, "a?b?c", "a\tb\nc"},
    {"CRLF, lone CR", "a\r\nb\rc\r", -1, "a??b?c?", "a\nb?c?"},
    {"screen clear", "\x1b[2J\x1b[H", -1, "?[2J?[H", NULL},
    {"OSC 52 clipboard set", "\x1b]52;c;cm0gLXJmIH4=\x07", -1, "?]52;c;cm0gLXJmIH4=?", NULL},
    {"OSC 52 with ST", "\x1b]52;c;eA==\x1b\\", -1, "?]52;c;eA==?\\", NULL},
    {"bell, backspace, NUL", "a\x07\x08z", -1, "a??z", NULL},
    {"embedded NUL", "a\0b", 3, "a?b", NULL},
    {"DEL", "a\x7f", -1, "a?", NULL},
    {"raw C1 CSI",
     "\x9b"
     "31m red",
     -1, "?31m red", NULL},
    {"raw C1 OSC and ST",
     "\x9d"
     "0;title\x9c",
     -1, "?0;title?", NULL},
    {"UTF-8 C1 CSI",
     "\xc2\x9b"
     "2J",
     -1, "?2J", NULL},
    {"UTF-8 C1 range ends", "\xc2\x80\xc2\x9f\xc2\xa0", -1, "??\xc2\xa0", NULL},
    {"overlong slash", "\xc0\xaf", -1, "??", NULL},
    {"overlong 3 bytes", "\xe0\x80\xaf", -1, "???", NULL},
    {"overlong 4 bytes", "\xf0\x80\x80\xaf", -1, "????", NULL},
    {"overlong ESC", "\xc1\x9b", -1, "??", NULL},
    {"surrogate", "\xed\xa0\x80", -1, "???", NULL},
    {"beyond U+10FFFF", "\xf4\x90\x80\x80", -1, "????", NULL},
    {"F5-FF", "\xf5\xfe\xff", -1, "???", NULL},
    {"stray continuation",
     "a\x80\xbf"
     "b",
     -1, "a??b", NULL},
    {"sequence cut by a new one", "\xe6\x97\xe6\x97\xa5", -1, "??\xe6\x97\xa5", NULL},
    {"sequence cut by ASCII",
     "\xe6\x97"
     "a",
     -1, "??a", NULL},
    {"truncated at the end", "ok\xe6\x97", -1, "ok??", NULL},
    {"truncated 4-byte at the end", "ok\xf0\x9f\x98", -1, "ok???", NULL},
    {"bidi override (Trojan Source)",
     "a\xe2\x80\xae"
     "b\xe2\x81\xa6"
     "c\xe2\x81\xa9",
     -1, "a?b?c?", NULL},
    {"bidi range ends", "\xe2\x80\xaa\xe2\x80\xa9\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa", -1,
     "?\xe2\x80\xa9\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa", NULL},
};

static void test_table(void) {
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const Case *c = &cases[i];
    g_test_message("%s", c->what);
    g_autofree char *line = hutch_text_sanitize(c->in, c->len, HUTCH_TEXT_LINE);
    g_assert_cmpstr(line, ==, c->line);
    g_autofree char *lines = hutch_text_sanitize(c->in, c->len, HUTCH_TEXT_LINES);
    g_assert_cmpstr(lines, ==, c->lines ? c->lines : c->line);
    g_assert_true(g_utf8_validate(lines, -1, NULL));
  }
  g_autofree char *null = hutch_text_sanitize(NULL, -1, HUTCH_TEXT_LINE);
  g_assert_cmpstr(null, ==, "");
}

/* Every byte value alone and after a lead byte: the output is valid UTF-8 with no control
 * character a terminal obeys. */
static void assert_inert(const char *text, gboolean lines) {
  g_assert_true(g_utf8_validate(text, -1, NULL));
  for (const char *p = text; *p; p = g_utf8_next_char(p)) {
    gunichar ch = g_utf8_get_char(p);
    if (lines && (ch == '\n' || ch == '\t'))
      continue;
    g_assert_false(ch < 0x20 || (ch >= 0x7f && ch <= 0x9f));
    g_assert_false((ch >= 0x202a && ch <= 0x202e) || (ch >= 0x2066 && ch <= 0x2069));
  }
}

static void test_all_bytes(void) {
  for (guint lead = 0; lead < 256; lead++) {
    for (guint next = 0; next < 256; next++) {
      char in[3] = {(char)lead, (char)next, (char)0x80};
      g_autofree char *line = hutch_text_sanitize(in, 3, HUTCH_TEXT_LINE);
      assert_inert(line, FALSE);
      g_autofree char *lines = hutch_text_sanitize(in, 3, HUTCH_TEXT_LINES);
      assert_inert(lines, TRUE);
    }
  }
}

/* Chunks, split at every place (and byte by byte), give what the whole text gives. */
static char *sanitize_in_chunks(const char *text, gsize len, gsize chunk, HutchTextFlags flags) {
  HutchTextStream stream;
  hutch_text_stream_init(&stream, flags);
  GString *out = g_string_new(NULL);
  for (gsize at = 0; at < len; at += chunk)
    hutch_text_stream_feed(&stream, text + at, MIN(chunk, len - at), out);
  hutch_text_stream_finish(&stream, out);
  return g_string_free(out, FALSE);
}

static void test_stream(void) {
  static const char text[] = "boot \xe6\x97\xa5\xe6\x9c\xac\r\n\xf0\x9f\x98\x80\x1b[0m\xc2\x9b"
                             "x\r\r\n\xe2\x80\xae\xc0\xaf tail \xf0\x9f\x98";
  const gsize len = sizeof(text) - 1;
  for (int f = 0; f < 2; f++) {
    HutchTextFlags flags = f ? HUTCH_TEXT_LINES : HUTCH_TEXT_LINE;
    g_autofree char *whole = hutch_text_sanitize(text, (gssize)len, flags);
    for (gsize chunk = 1; chunk <= len; chunk++) {
      g_autofree char *chunked = sanitize_in_chunks(text, len, chunk, flags);
      g_assert_cmpstr(chunked, ==, whole);
    }
    /* two chunks, split at each place */
    for (gsize cut = 0; cut <= len; cut++) {
      HutchTextStream stream;
      hutch_text_stream_init(&stream, flags);
      g_autoptr(GString) out = g_string_new(NULL);
      hutch_text_stream_feed(&stream, text, cut, out);
      hutch_text_stream_feed(&stream, text + cut, len - cut, out);
      hutch_text_stream_finish(&stream, out);
      g_assert_cmpstr(out->str, ==, whole);
    }
  }
  g_autofree char *lines = sanitize_in_chunks(text, len, 1, HUTCH_TEXT_LINES);
  g_assert_cmpstr(lines, ==,
                  "boot \xe6\x97\xa5\xe6\x9c\xac\n\xf0\x9f\x98\x80?[0m?x?\n??? tail ???");
}

static void test_truncate(void) {
  char ascii[] = "abcdef";
  hutch_text_truncate(ascii, 3);
  g_assert_cmpstr(ascii, ==, "abc");
  char short_enough[] = "abc";
  hutch_text_truncate(short_enough, 3);
  g_assert_cmpstr(short_enough, ==, "abc");
  /* "日本" is 6 bytes: a cut inside the second character drops all of it */
  for (gsize max = 3; max < 6; max++) {
    char text[] = "\xe6\x97\xa5\xe6\x9c\xac";
    hutch_text_truncate(text, max);
    g_assert_cmpstr(text, ==, "\xe6\x97\xa5");
  }
  char emoji[] = "\xf0\x9f\x98\x80";
  hutch_text_truncate(emoji, 2);
  g_assert_cmpstr(emoji, ==, "");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/text/table", test_table);
  g_test_add_func("/text/all-bytes", test_all_bytes);
  g_test_add_func("/text/stream", test_stream);
  g_test_add_func("/text/truncate", test_truncate);
  return g_test_run();
}
