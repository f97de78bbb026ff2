/*
 * flood: write N numbered lines of exactly 100 bytes to stdout as fast as the
 * reader lets it, and report how long that took and how long the longest
 * single write() blocked.
 *
 * Line i (0-based) is "%010d" of i, one space, 88 filler bytes, '\n'.
 * Whole lines are packed 40 at a time (4000 bytes) into each write().
 *
 *   flood [--lines N] [--report PATH] [--wait-for PATH] [--wait-timeout S]
 *         [--rate LINES_PER_S]
 *
 * --report PATH     write a JSON report there at the end (never to stdout or
 *                   stderr: those are what is being measured). Written to
 *                   PATH.tmp and renamed, so a reader never sees half of it.
 * --wait-for PATH   before writing, wait until PATH exists. While waiting,
 *                   write a heartbeat line "#flood waiting\n" to stdout every
 *                   20 ms, so a reader at the far end can tell that it is
 *                   connected and receiving live output; the checker skips
 *                   '#' lines before the first numbered line. Timing starts
 *                   after the wait.
 * --wait-timeout S  give up waiting after S seconds (default 60): exit 3.
 * --rate R          pace the output at R lines/s (0, the default: as fast as
 *                   the reader lets it): before each write() of 40 lines,
 *                   sleep until start + lines_so_far / R. The sleeps are not
 *                   write() stalls; wall_s still runs from the first write to
 *                   the last.
 *
 * Exit status: 0 all lines written, 2 usage, 3 wait timed out, 4 write error
 * (the report says which).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LINE_LEN 100
#define DIGITS 10
#define LINES_PER_WRITE 40
#define BUF_LEN (LINE_LEN * LINES_PER_WRITE)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void) {
    fprintf(stderr, "usage: flood [--lines N] [--report PATH] [--wait-for PATH] [--wait-timeout S] "
                    "[--rate LINES_PER_S]\n");
    exit(2);
}

struct stats {
    long long lines_written;
    long long bytes_written;
    long long writes;        /* write() calls, partial ones included */
    long long partial_writes;
    long long stalls_over_1ms;
    long long stalls_over_10ms;
    long long stalls_over_100ms;
    double max_stall_s;
    double start_mono;       /* CLOCK_MONOTONIC, seconds: before the first write */
    double end_mono;         /* after the last write returned */
    double waited_s;
    long long heartbeats;    /* "#flood waiting" lines written while waiting */
    double rate;             /* --rate, 0 if unpaced */
    int err;                 /* errno of a failed write, 0 if none */
};

static void write_report(const char *path, long long lines, const struct stats *st, const char *error) {
    if (path == NULL) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return;
    double wall = st->end_mono - st->start_mono;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(f,
            "{\"lines\":%lld,\"bytes\":%lld,\"lines_requested\":%lld,\"wall_s\":%.6f,"
            "\"max_write_stall_ms\":%.3f,\"writes\":%lld,\"partial_writes\":%lld,"
            "\"stalls_over_1ms\":%lld,\"stalls_over_10ms\":%lld,\"stalls_over_100ms\":%lld,"
            "\"start_mono_s\":%.6f,\"end_mono_s\":%.6f,\"waited_s\":%.6f,\"mb_per_s\":%.3f,"
            "\"heartbeats\":%lld,\"rate\":%.1f,\"user_s\":%.3f,\"sys_s\":%.3f,\"error\":",
            st->lines_written, st->bytes_written, lines, wall, st->max_stall_s * 1e3, st->writes,
            st->partial_writes, st->stalls_over_1ms, st->stalls_over_10ms, st->stalls_over_100ms,
            st->start_mono, st->end_mono, st->waited_s,
            wall > 0 ? (double)st->bytes_written / 1e6 / wall : 0.0, st->heartbeats, st->rate,
            ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    if (error == NULL) fputs("null", f);
    else fprintf(f, "\"%s\"", error);
    fputs("}\n", f);
    if (fclose(f) == 0) rename(tmp, path);
}

/* Increment a zero-padded decimal number in place. */
static void incr(char *d) {
    for (int i = DIGITS - 1; i >= 0; i--) {
        if (d[i] != '9') { d[i]++; return; }
        d[i] = '0';
    }
}

int main(int argc, char **argv) {
    long long lines = 2000000;
    const char *report = NULL, *wait_for = NULL;
    double wait_timeout = 60.0, rate = 0.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        if (strcmp(a, "--lines") == 0) lines = atoll(argv[++i]);
        else if (strcmp(a, "--report") == 0) report = argv[++i];
        else if (strcmp(a, "--wait-for") == 0) wait_for = argv[++i];
        else if (strcmp(a, "--wait-timeout") == 0) wait_timeout = atof(argv[++i]);
        else if (strcmp(a, "--rate") == 0) rate = atof(argv[++i]);
        else usage();
    }
    if (lines < 0 || lines > 9999999999LL || rate < 0) usage();
    signal(SIGPIPE, SIG_IGN); /* a closed reader shows as EPIPE, reported */

    struct stats st;
    memset(&st, 0, sizeof st);
    st.rate = rate;

    if (wait_for != NULL) {
        static const char hb[] = "#flood waiting\n";
        double t0 = now_s(), last_hb = 0;
        while (access(wait_for, F_OK) != 0) {
            double t = now_s();
            if (t - t0 > wait_timeout) {
                st.start_mono = st.end_mono = t;
                write_report(report, lines, &st, "timed out waiting for the start file");
                return 3;
            }
            if (t - last_hb >= 0.02) {
                /* best effort; a heartbeat is one short atomic write */
                ssize_t w = write(1, hb, sizeof hb - 1);
                if (w < 0 && errno == EPIPE) {
                    st.start_mono = st.end_mono = t;
                    write_report(report, lines, &st, "stdout closed while waiting");
                    return 4;
                }
                if (w == (ssize_t)(sizeof hb - 1)) st.heartbeats++;
                last_hb = t;
            }
            usleep(1000);
        }
        st.waited_s = now_s() - t0;
    }

    /* One buffer of LINES_PER_WRITE lines; only the numbers change. */
    static char buf[BUF_LEN];
    for (int j = 0; j < LINES_PER_WRITE; j++) {
        char *l = buf + j * LINE_LEN;
        memset(l, '0', DIGITS);
        l[DIGITS] = ' ';
        for (int k = DIGITS + 1; k < LINE_LEN - 1; k++) l[k] = (char)('a' + (k % 26));
        l[LINE_LEN - 1] = '\n';
    }
    char num[DIGITS];
    memset(num, '0', DIGITS);

    const char *error = NULL;
    st.start_mono = now_s();
    st.end_mono = st.start_mono;
    long long next = 0;
    while (next < lines && error == NULL) {
        int n = (lines - next) < LINES_PER_WRITE ? (int)(lines - next) : LINES_PER_WRITE;
        for (int j = 0; j < n; j++) {
            memcpy(buf + j * LINE_LEN, num, DIGITS);
            incr(num);
        }
        if (rate > 0) {
            /* absolute deadline, so sleeping late never accumulates */
            double due = st.start_mono + (double)next / rate;
            if (due > now_s()) {
                struct timespec ts;
                ts.tv_sec = (time_t)due;
                ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
                }
            }
        }
        size_t len = (size_t)n * LINE_LEN, off = 0;
        while (off < len) {
            double t0 = now_s();
            ssize_t w = write(1, buf + off, len - off);
            double t1 = now_s();
            double d = t1 - t0;
            st.writes++;
            if (d > st.max_stall_s) st.max_stall_s = d;
            if (d > 0.001) st.stalls_over_1ms++;
            if (d > 0.010) st.stalls_over_10ms++;
            if (d > 0.100) st.stalls_over_100ms++;
            st.end_mono = t1;
            if (w < 0) {
                if (errno == EINTR) continue;
                st.err = errno;
                error = errno == EPIPE ? "EPIPE: reader closed stdout" : "write failed";
                break;
            }
            if ((size_t)w < len - off) st.partial_writes++;
            off += (size_t)w;
            st.bytes_written += w;
        }
        if (error == NULL) {
            next += n;
            st.lines_written = next;
        } else {
            st.lines_written = st.bytes_written / LINE_LEN;
        }
    }
    write_report(report, lines, &st, error);
    return error == NULL ? 0 : 4;
}
