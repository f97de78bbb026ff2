/*
 * check_lines: read flood's output from stdin and check that it is exactly
 * lines 0, 1, 2, ... in order, each byte for byte what flood writes, with no
 * duplicates, holes or strays; time when the first and last bytes arrived.
 *
 *   check_lines --report PATH [--expect N] [--ready-file PATH]
 *
 * --report PATH      JSON report, written at EOF (and also as soon as the
 *                    N-th line arrives when --expect is given, with
 *                    "final":false, so a runner need not wait for EOF).
 *                    Written to PATH.tmp and renamed.
 * --expect N         the number of lines that should arrive.
 * --ready-file PATH  create PATH when the first '#' heartbeat line arrives
 *                    (see flood --wait-for): proof that the pipeline up to
 *                    here is live. '#' lines are skipped before the first
 *                    numbered line and are an error after it.
 *
 * Exit status: 0 when every line checked out (and, with --expect, all N
 * arrived), 1 otherwise, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_LEN 100
#define DIGITS 10
#define READ_LEN (1 << 20)
#define CARRY_MAX 65536

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void) {
    fprintf(stderr, "usage: check_lines --report PATH [--expect N] [--ready-file PATH]\n");
    exit(2);
}

static const char *report_path;
static const char *ready_path;
static long long expect = -1;

static char tmpl[LINE_LEN];        /* the next expected line */
static long long lines;            /* numbered-position lines received */
static long long preamble;         /* '#' lines skipped before the first numbered line */
static long long bytes_in;         /* all bytes read */
static long long first_bad = -1;   /* index of the first bad line */
static char bad_reason[256];
static char bad_sample[64];
static double first_mono, last_mono, ready_mono;
static int seen_number;

static void incr(char *d) {
    for (int i = DIGITS - 1; i >= 0; i--) {
        if (d[i] != '9') { d[i]++; return; }
        d[i] = '0';
    }
}

static void sample(const char *p, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < sizeof bad_sample; i++) {
        unsigned char c = (unsigned char)p[i];
        bad_sample[j++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    bad_sample[j] = 0;
}

static void bad(const char *p, size_t n, const char *why) {
    if (first_bad >= 0) return;
    first_bad = lines;
    snprintf(bad_reason, sizeof bad_reason, "%s", why);
    sample(p, n);
}

static void write_report(int final, size_t carry_len) {
    if (report_path == NULL) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", report_path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return;
    double elapsed = seen_number ? last_mono - first_mono : 0.0;
    int in_order = first_bad < 0 && carry_len == 0;
    int complete = expect < 0 ? 1 : lines == expect;
    fprintf(f,
            "{\"lines\":%lld,\"expected\":%lld,\"in_order\":%s,\"complete\":%s,\"ok\":%s,"
            "\"first_bad\":",
            lines, expect, in_order ? "true" : "false", complete ? "true" : "false",
            in_order && complete ? "true" : "false");
    if (first_bad < 0 && carry_len == 0) fputs("null", f);
    else fprintf(f, "%lld", first_bad >= 0 ? first_bad : lines);
    fprintf(f, ",\"bad_reason\":");
    if (first_bad >= 0) fprintf(f, "\"%s\",\"bad_sample\":\"%s\"", bad_reason, bad_sample);
    else if (carry_len) fprintf(f, "\"unterminated last line of %zu bytes\"", carry_len);
    else fputs("null", f);
    fprintf(f,
            ",\"preamble_lines\":%lld,\"bytes\":%lld,\"elapsed_s\":%.6f,\"lines_per_s\":%.1f,"
            "\"first_byte_mono_s\":%.6f,\"last_byte_mono_s\":%.6f,\"ready_mono_s\":%.6f,\"final\":%s}\n",
            preamble, bytes_in, elapsed, elapsed > 0 ? (double)lines / elapsed : 0.0, first_mono,
            last_mono, ready_mono, final ? "true" : "false");
    if (fclose(f) == 0) rename(tmp, report_path);
}

/* One whole line, '\n' included. */
static void line(const char *p, size_t n, double t) {
    if (!seen_number && n > 0 && p[0] == '#') {
        preamble++;
        if (preamble == 1 && ready_path != NULL) {
            int fd = open(ready_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) close(fd);
            ready_mono = t;
        }
        return;
    }
    if (!seen_number) {
        seen_number = 1;
        first_mono = t;
    }
    if (first_bad < 0) {
        if (expect >= 0 && lines >= expect) bad(p, n, "more lines than expected");
        else if (n != LINE_LEN) bad(p, n, "line is not 100 bytes");
        else if (memcmp(p, tmpl, DIGITS) != 0) bad(p, n, "line number is not the next one");
        else if (memcmp(p + DIGITS, tmpl + DIGITS, LINE_LEN - DIGITS) != 0) bad(p, n, "line body differs");
    }
    lines++;
    incr(tmpl);
    if (expect >= 0 && lines == expect) write_report(0, 0);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--report") == 0) report_path = argv[++i];
        else if (strcmp(argv[i], "--expect") == 0) expect = atoll(argv[++i]);
        else if (strcmp(argv[i], "--ready-file") == 0) ready_path = argv[++i];
        else usage();
    }
    memset(tmpl, '0', DIGITS);
    tmpl[DIGITS] = ' ';
    for (int k = DIGITS + 1; k < LINE_LEN - 1; k++) tmpl[k] = (char)('a' + (k % 26));
    tmpl[LINE_LEN - 1] = '\n';

    static char buf[READ_LEN];
    static char carry[CARRY_MAX];
    size_t carry_len = 0;
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("check_lines: read");
            break;
        }
        if (r == 0) break;
        double t = now_s();
        last_mono = t;
        bytes_in += r;
        const char *p = buf, *end = buf + r;
        if (carry_len) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t take = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);
            if (carry_len + take > CARRY_MAX) {
                bad(carry, carry_len, "line longer than 64 KiB");
                carry_len = 0; /* drop it, keep counting what follows */
                if (!nl) continue;
                lines++;
                incr(tmpl);
                p = nl + 1;
            } else {
                memcpy(carry + carry_len, p, take);
                carry_len += take;
                p += take;
                if (!nl) continue;
                line(carry, carry_len, t);
                carry_len = 0;
            }
        }
        for (;;) {
            /* fast path: a whole well-formed line in the buffer */
            if (end - p >= LINE_LEN && p[LINE_LEN - 1] == '\n' && p[0] != '#') {
                line(p, LINE_LEN, t);
                p += LINE_LEN;
                continue;
            }
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) break;
            line(p, (size_t)(nl + 1 - p), t);
            p = nl + 1;
        }
        size_t rest = (size_t)(end - p);
        if (rest) {
            if (rest > CARRY_MAX) rest = CARRY_MAX; /* caught as too long next time */
            memcpy(carry, p, rest);
            carry_len = rest;
        }
    }
    if (carry_len) bad(carry, carry_len, "unterminated last line");
    write_report(1, 0);
    int complete = expect < 0 || lines == expect;
    return first_bad < 0 && complete ? 0 : 1;
}
