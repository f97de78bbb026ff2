/* The output path's hot loops in C: cutting pipe reads into records, counting lines, building Stream batches.
 *
 * Every function here has a pure-Python reference (lines.py, records.py, stream.py) that it matches byte for
 * byte; tests/test_native.py compares them on random inputs. The scanning runs without the GIL, on memory this
 * module owns or on immutable bytes it holds a reference to, so the event loop keeps the GIL while a pipe read
 * is counted and cut, and the drain threads run in parallel. The drain uses read_cut; cut is the same work on
 * bytes already read (for the tests).
 *
 * Sizes are in bytes; a "line" ends with '\n', and an unterminated tail counts as one line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Below this many bytes the GIL is kept: releasing and taking it back costs more than the scan. */
#define NOGIL_BYTES (64 * 1024)

/* ---- scanning -------------------------------------------------------------------------------------------- */

/* Newlines in p[0..n): 16 bytes at a time where SSE2 exists (every x86-64), byte by byte elsewhere. */
static Py_ssize_t
count_nl_sse2(const char *p, Py_ssize_t n)
{
    Py_ssize_t c = 0, i = 0;
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    while (n - i >= 16 * 255) {
        /* Byte-wide counters (0 - 0xFF per match) for at most 255 blocks, then summed with psadbw. */
        __m128i acc = _mm_setzero_si128();
        for (int k = 0; k < 255; k++, i += 16)
            acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), nl));
        __m128i sums = _mm_sad_epu8(acc, _mm_setzero_si128());
        c += _mm_cvtsi128_si32(sums) + _mm_extract_epi16(sums, 4);
    }
    for (; n - i >= 16; i += 16)
        c += __builtin_popcount((unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), nl)));
#endif
    for (; i < n; i++)
        c += p[i] == '\n';
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
/* The same with 32-byte vectors, for CPUs that have AVX2 (chosen at import): 1 MiB in 25 us against 130-270. */
__attribute__((target("avx2"))) static Py_ssize_t
count_nl_avx2(const char *p, Py_ssize_t n)
{
    Py_ssize_t c = 0, i = 0;
    const __m256i nl = _mm256_set1_epi8('\n');
    while (n - i >= 32 * 255) {
        __m256i acc = _mm256_setzero_si256();
        for (int k = 0; k < 255; k++, i += 32)
            acc = _mm256_sub_epi8(acc, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + i)), nl));
        __m256i sums = _mm256_sad_epu8(acc, _mm256_setzero_si256());
        c += _mm256_extract_epi64(sums, 0) + _mm256_extract_epi64(sums, 1) + _mm256_extract_epi64(sums, 2)
             + _mm256_extract_epi64(sums, 3);
    }
    return c + count_nl_sse2(p + i, n - i);
}
#endif

static int use_avx2 = 0;

/* Newlines in p[0..n). */
static Py_ssize_t
count_nl(const char *p, Py_ssize_t n)
{
#ifdef HAVE_AVX2_PATH
    if (use_avx2)
        return count_nl_avx2(p, n);
#endif
    return count_nl_sse2(p, n);
}

/* Index of the last '\n' in p[lo..hi), or -1. */
static Py_ssize_t
rfind_nl(const char *p, Py_ssize_t lo, Py_ssize_t hi)
{
    if (hi <= lo)
        return -1;
    const char *r = memrchr(p + lo, '\n', (size_t)(hi - lo));
    return r ? r - p : -1;
}

/* Index of the first '\n' in p[lo..hi), or -1. */
static Py_ssize_t
find_nl(const char *p, Py_ssize_t lo, Py_ssize_t hi)
{
    if (hi <= lo)
        return -1;
    const char *r = memchr(p + lo, '\n', (size_t)(hi - lo));
    return r ? r - p : -1;
}

/* lines.cut_point: where to end a piece that may run up to limit (exclusive); p[limit] must exist. */
static Py_ssize_t
cut_point(const unsigned char *p, Py_ssize_t limit, Py_ssize_t floor)
{
    if ((p[limit] & 0xC0) != 0x80)
        return limit;
    Py_ssize_t stop = floor > limit - 4 ? floor : limit - 4;
    for (Py_ssize_t k = limit - 1; k > stop; k--) {
        unsigned char b = p[k];
        if ((b & 0xC0) == 0xC0)
            return k;
        if ((b & 0xC0) != 0x80)
            return limit;
    }
    return limit;
}

/* A growing list of part ends and line counts, filled without the GIL. */
typedef struct {
    Py_ssize_t *ends;
    Py_ssize_t *lines;
    Py_ssize_t len, cap;
    int failed;
} parts_t;

static void
parts_add(parts_t *ps, Py_ssize_t end, Py_ssize_t lines)
{
    if (ps->failed)
        return;
    if (ps->len == ps->cap) {
        Py_ssize_t cap = ps->cap ? ps->cap * 2 : 16;
        Py_ssize_t *e = PyMem_RawRealloc(ps->ends, (size_t)cap * sizeof(Py_ssize_t));
        if (e == NULL) {
            ps->failed = 1;
            return;
        }
        ps->ends = e;
        Py_ssize_t *l = PyMem_RawRealloc(ps->lines, (size_t)cap * sizeof(Py_ssize_t));
        if (l == NULL) {
            ps->failed = 1;
            return;
        }
        ps->lines = l;
        ps->cap = cap;
    }
    ps->ends[ps->len] = end;
    ps->lines[ps->len] = lines;
    ps->len++;
}

static void
parts_free(parts_t *ps)
{
    PyMem_RawFree(ps->ends);
    PyMem_RawFree(ps->lines);
}

/* Pieces of at most max_line bytes off v[start..n), as LineAssembler._cut_tail; returns where the held tail starts. */
static Py_ssize_t
cut_tail(const unsigned char *v, Py_ssize_t start, Py_ssize_t n, Py_ssize_t max_line, parts_t *ps)
{
    while (n - start > max_line) {
        Py_ssize_t cut = cut_point(v, start + max_line, start);
        parts_add(ps, cut, 1);
        start = cut;
    }
    return start;
}

/* LineAssembler._split of v[0..n), which ends with '\n'. */
static void
split_complete(const unsigned char *v, Py_ssize_t n, Py_ssize_t max_line, parts_t *ps)
{
    const char *c = (const char *)v;
    Py_ssize_t pos = 0, scan = 0;
    while (n - scan > max_line + 1) {
        Py_ssize_t nl = rfind_nl(c, scan, scan + max_line + 1);
        if (nl >= 0) {
            scan = nl + 1;
            continue;
        }
        Py_ssize_t end = find_nl(c, scan, n); /* v ends with a newline: found */
        if (scan > pos)
            parts_add(ps, scan, count_nl(c + pos, scan - pos));
        Py_ssize_t start = scan;
        while (end - start > max_line) {
            Py_ssize_t cut = cut_point(v, start + max_line, start);
            parts_add(ps, cut, 1);
            start = cut;
        }
        parts_add(ps, end + 1, 1);
        pos = scan = end + 1;
    }
    if (pos < n)
        parts_add(ps, n, count_nl(c + pos, n - pos));
}

/* LineAssembler.feed_buffer on v = tail + read, where the read is v[t..n): fills ps, returns where the new tail starts. */
static Py_ssize_t
cut_all(const unsigned char *v, Py_ssize_t t, Py_ssize_t n, Py_ssize_t max_line, parts_t *ps)
{
    Py_ssize_t last_nl = rfind_nl((const char *)v, t, n);
    if (last_nl < 0)
        return cut_tail(v, 0, n, max_line, ps);
    split_complete(v, last_nl + 1, max_line, ps);
    return cut_tail(v, last_nl + 1, n, max_line, ps);
}

/* ---- cut and read_cut ----------------------------------------------------------------------------------- */

/* (parts, counts, tail) from v[0..n) and the part ends in ps, the new tail starting at tail_at. */
static PyObject *
build_cut_result(const char *v, Py_ssize_t n, Py_ssize_t tail_at, parts_t *ps)
{
    PyObject *parts = PyList_New(ps->len);
    PyObject *counts = PyList_New(ps->len);
    PyObject *tail = PyBytes_FromStringAndSize(v + tail_at, n - tail_at);
    if (parts == NULL || counts == NULL || tail == NULL)
        goto fail;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < ps->len; i++) {
        PyObject *part = PyBytes_FromStringAndSize(v + start, ps->ends[i] - start);
        if (part == NULL)
            goto fail;
        PyList_SET_ITEM(parts, i, part);
        PyObject *count = PyLong_FromSsize_t(ps->lines[i]);
        if (count == NULL)
            goto fail;
        PyList_SET_ITEM(counts, i, count);
        start = ps->ends[i];
    }
    return Py_BuildValue("(NNN)", parts, counts, tail);
fail:
    Py_XDECREF(parts);
    Py_XDECREF(counts);
    Py_XDECREF(tail);
    return NULL;
}

/* Scans tail + buf[0..n) without the GIL and builds the result; a copy joins them when a tail is held. */
static PyObject *
cut_impl(PyObject *tail, const char *buf, Py_ssize_t n, Py_ssize_t max_line)
{
    const char *tp = PyBytes_AS_STRING(tail);
    Py_ssize_t t = PyBytes_GET_SIZE(tail);
    Py_ssize_t total = t + n;
    char *scratch = NULL;
    const char *v = buf;
    parts_t ps = {0};
    Py_ssize_t tail_at;
    if (t) {
        scratch = PyMem_RawMalloc((size_t)total);
        if (scratch == NULL)
            return PyErr_NoMemory();
        v = scratch;
    }
    if (total < NOGIL_BYTES) {
        if (t) {
            memcpy(scratch, tp, (size_t)t);
            memcpy(scratch + t, buf, (size_t)n);
        }
        tail_at = cut_all((const unsigned char *)v, t, total, max_line, &ps);
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        if (t) {
            memcpy(scratch, tp, (size_t)t);
            memcpy(scratch + t, buf, (size_t)n);
        }
        tail_at = cut_all((const unsigned char *)v, t, total, max_line, &ps);
        Py_END_ALLOW_THREADS
    }
    PyObject *res = ps.failed ? PyErr_NoMemory() : build_cut_result(v, total, tail_at, &ps);
    parts_free(&ps);
    PyMem_RawFree(scratch);
    return res;
}

static int
check_max_line(Py_ssize_t max_line)
{
    if (max_line < 1) {
        PyErr_SetString(PyExc_ValueError, "max_line must be >= 1");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(cut_doc,
"cut(tail, buf, n, max_line) -> (parts, counts, tail)\n\n"
"LineAssembler.feed_buffer: the records that tail + buf[:n] completes, the lines in each, and the bytes held.");

static PyObject *
native_cut(PyObject *self, PyObject *args)
{
    PyObject *tail;
    Py_buffer buf;
    Py_ssize_t n, max_line;
    if (!PyArg_ParseTuple(args, "O!y*nn:cut", &PyBytes_Type, &tail, &buf, &n, &max_line))
        return NULL;
    PyObject *res = NULL;
    if (n < 0 || n > buf.len)
        PyErr_SetString(PyExc_ValueError, "n out of range");
    else if (check_max_line(max_line) == 0)
        res = cut_impl(tail, buf.buf, n, max_line);
    PyBuffer_Release(&buf);
    return res;
}

/* A new bytes object (refcount 1, never hashed; the reference is consumed) shortened to size bytes. In place,
 * keeping its allocation, when that wastes little (at most 4 KiB or 1/16 of the size: a ring's byte charges stay
 * within that of the memory held); else copied at the exact size. NULL when out of memory. Measured: shrinking
 * with _PyBytes_Resize (realloc) left the resident set of ten flooding children at 1.2x their rings' bytes,
 * against 1.08-1.17x this way. */
static PyObject *
shrunk(PyObject *bytes, Py_ssize_t size)
{
    Py_ssize_t waste = PyBytes_GET_SIZE(bytes) - size;
    assert(Py_REFCNT(bytes) == 1 && waste >= 0);
    if (waste > 4096 && waste > size / 16) {
        PyObject *copy = PyBytes_FromStringAndSize(PyBytes_AS_STRING(bytes), size);
        Py_DECREF(bytes);
        return copy;
    }
    Py_SET_SIZE(bytes, size);
    PyBytes_AS_STRING(bytes)[size] = '\0';
    return bytes;
}

/* (parts, counts, tail) as build_cut_result, from whole (a new reference, consumed), the bytes v[0..n) already
 * in a bytes object: the common single part, or everything held, is whole itself, shrunk; no copy of the run. */
static PyObject *
build_cut_result_whole(PyObject *whole, Py_ssize_t n, Py_ssize_t tail_at, parts_t *ps)
{
    const char *v = PyBytes_AS_STRING(whole);
    if (ps->len > 1 || (ps->len == 1 && ps->ends[0] != tail_at)) {
        PyObject *res = build_cut_result(v, n, tail_at, ps);
        Py_DECREF(whole);
        return res;
    }
    if (ps->len == 0) /* all held: the tail is whole */
        return Py_BuildValue("([][]N)", whole);
    PyObject *tail = PyBytes_FromStringAndSize(v + tail_at, n - tail_at);
    if (tail == NULL) {
        Py_DECREF(whole);
        return NULL;
    }
    whole = shrunk(whole, tail_at);
    if (whole == NULL) {
        Py_DECREF(tail);
        return NULL;
    }
    return Py_BuildValue("([N][n]N)", whole, ps->lines[0], tail);
}

PyDoc_STRVAR(read_cut_doc,
"read_cut(fd, buf, size, tail, max_line) -> (n, parts, counts, tail)\n\n"
"One read of up to size bytes (at most len(buf)) from fd, cut as by cut(); the GIL is released for the read\n"
"and the scan together. Where the pipe says how much it holds (FIONREAD), the bytes are read straight into the\n"
"bytes object that becomes the record, else into the writable buf and copied. n == 0 at EOF (nothing is cut).\n"
"Raises OSError (BlockingIOError when the pipe is empty).");

static PyObject *
native_read_cut(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer buf;
    Py_ssize_t size, max_line;
    PyObject *tail;
    if (!PyArg_ParseTuple(args, "iw*nO!n:read_cut", &fd, &buf, &size, &PyBytes_Type, &tail, &max_line))
        return NULL;
    PyObject *res = NULL, *whole = NULL;
    if (size <= 0 || buf.len <= 0) {
        PyErr_SetString(PyExc_ValueError, "size and buf must not be empty");
        goto done;
    }
    if (size > buf.len)
        size = buf.len; /* as os.readv into memoryview(buf)[:size] */
    if (check_max_line(max_line) < 0)
        goto done;
    const char *tp = PyBytes_AS_STRING(tail);
    Py_ssize_t t = PyBytes_GET_SIZE(tail);
    int avail = 0;
    if (ioctl(fd, FIONREAD, &avail) < 0 || avail < 0)
        avail = 0; /* not a pipe, or it cannot say: read into buf */
    Py_ssize_t want = avail < size ? avail : size;
    char *dst = buf.buf;
    if (want > 0) {
        whole = PyBytes_FromStringAndSize(NULL, t + want);
        if (whole == NULL)
            goto done;
        memcpy(PyBytes_AS_STRING(whole), tp, (size_t)t);
        dst = PyBytes_AS_STRING(whole) + t;
    }
    else
        want = size;
    ssize_t n;
    int err = 0;
    char *scratch = NULL;
    int nomem = 0;
    parts_t ps = {0};
    Py_ssize_t tail_at = 0;
    const char *v = NULL;
    Py_BEGIN_ALLOW_THREADS
    do {
        n = read(fd, dst, (size_t)want);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        err = errno;
    else if (n > 0) {
        if (whole != NULL)
            v = PyBytes_AS_STRING(whole);
        else if (t) {
            scratch = PyMem_RawMalloc((size_t)(t + n));
            if (scratch == NULL)
                nomem = 1;
            else {
                memcpy(scratch, tp, (size_t)t);
                memcpy(scratch + t, buf.buf, (size_t)n);
                v = scratch;
            }
        }
        else
            v = buf.buf;
        if (!nomem)
            tail_at = cut_all((const unsigned char *)v, t, t + n, max_line, &ps);
    }
    Py_END_ALLOW_THREADS
    if (n < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    else if (n == 0)
        res = Py_BuildValue("(n[][]O)", (Py_ssize_t)0, tail);
    else if (nomem || ps.failed)
        PyErr_NoMemory();
    else {
        PyObject *cut;
        if (whole != NULL) {
            whole = shrunk(whole, t + n);
            cut = whole == NULL ? NULL : build_cut_result_whole(whole, t + n, tail_at, &ps);
            whole = NULL; /* consumed */
        }
        else
            cut = build_cut_result(v, t + n, tail_at, &ps);
        if (cut != NULL) {
            res = Py_BuildValue("(nOOO)", (Py_ssize_t)n, PyTuple_GET_ITEM(cut, 0), PyTuple_GET_ITEM(cut, 1),
                                PyTuple_GET_ITEM(cut, 2));
            Py_DECREF(cut);
        }
    }
    parts_free(&ps);
    PyMem_RawFree(scratch);
done:
    Py_XDECREF(whole);
    PyBuffer_Release(&buf);
    return res;
}

/* ---- counting -------------------------------------------------------------------------------------------- */

static int
span(Py_buffer *b, Py_ssize_t *start, Py_ssize_t *end)
{
    if (*end < 0 || *end > b->len)
        *end = b->len;
    if (*start < 0 || *start > *end) {
        PyErr_SetString(PyExc_ValueError, "start out of range");
        return -1;
    }
    return 0;
}

static Py_ssize_t
lines_in(const char *p, Py_ssize_t start, Py_ssize_t end)
{
    if (end <= start)
        return 0;
    Py_ssize_t n;
    if (end - start < NOGIL_BYTES)
        n = count_nl(p + start, end - start);
    else {
        Py_BEGIN_ALLOW_THREADS
        n = count_nl(p + start, end - start);
        Py_END_ALLOW_THREADS
    }
    return p[end - 1] == '\n' ? n : n + 1;
}

PyDoc_STRVAR(line_count_doc,
"line_count(data, start=0, end=-1) -> int\n\n"
"Lines in data[start:end]: one per newline, plus an unterminated tail (0 for no bytes).");

static PyObject *
native_line_count(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t start = 0, end = -1;
    if (!PyArg_ParseTuple(args, "y*|nn:line_count", &b, &start, &end))
        return NULL;
    PyObject *res = NULL;
    if (span(&b, &start, &end) == 0)
        res = PyLong_FromSsize_t(lines_in(b.buf, start, end));
    PyBuffer_Release(&b);
    return res;
}

/* Line lengths of p[0..n) into out (room for count_nl + 1); returns how many. */
static Py_ssize_t
lengths_into(const char *p, Py_ssize_t n, uint32_t *out)
{
    Py_ssize_t k = 0, pos = 0, i = 0;
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    for (; n - i >= 16; i += 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), nl));
        while (m) {
            Py_ssize_t end = i + __builtin_ctz(m) + 1;
            out[k++] = (uint32_t)(end - pos);
            pos = end;
            m &= m - 1;
        }
    }
#endif
    for (; i < n; i++) {
        if (p[i] == '\n') {
            out[k++] = (uint32_t)(i + 1 - pos);
            pos = i + 1;
        }
    }
    if (pos < n)
        out[k++] = (uint32_t)(n - pos);
    return k;
}

PyDoc_STRVAR(line_lengths_doc,
"line_lengths(data) -> bytes\n\n"
"records.line_lengths as the raw native uint32 values (for array('I').frombytes): each line's length in bytes,\n"
"its newline included.");

static PyObject *
native_line_lengths(PyObject *self, PyObject *args)
{
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*:line_lengths", &b))
        return NULL;
    PyObject *res = NULL;
    Py_ssize_t lines = lines_in(b.buf, 0, b.len);
    if (b.len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "data too long for uint32 lengths");
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, lines * (Py_ssize_t)sizeof(uint32_t));
    if (res == NULL)
        goto done;
    uint32_t *out = (uint32_t *)PyBytes_AS_STRING(res);
    if (b.len < NOGIL_BYTES)
        lengths_into(b.buf, b.len, out);
    else {
        Py_BEGIN_ALLOW_THREADS
        lengths_into(b.buf, b.len, out);
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&b);
    return res;
}

PyDoc_STRVAR(line_offset_doc,
"line_offset(data, k) -> int\n\n"
"Byte offset at which line k (0-based) of data begins: after its k-th newline (len(data) when there are fewer).");

static PyObject *
native_line_offset(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "y*n:line_offset", &b, &k))
        return NULL;
    const char *p = b.buf;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        const char *nl = pos < b.len ? memchr(p + pos, '\n', (size_t)(b.len - pos)) : NULL;
        if (nl == NULL) {
            pos = b.len;
            break;
        }
        pos = nl - p + 1;
    }
    PyBuffer_Release(&b);
    return PyLong_FromSsize_t(pos);
}

PyDoc_STRVAR(take_doc,
"take(data, offset, budget, at_least_one) -> (end, lines)\n\n"
"stream._take for a segment whose lines end with newlines: whole lines from offset, at most budget bytes;\n"
"end is the byte offset after them. With at_least_one a line longer than the budget is taken whole.");

static PyObject *
native_take(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t offset, budget;
    int at_least_one;
    if (!PyArg_ParseTuple(args, "y*nnp:take", &b, &offset, &budget, &at_least_one))
        return NULL;
    const char *p = b.buf;
    Py_ssize_t n = b.len, end;
    PyObject *res = NULL;
    if (offset < 0 || offset > n || budget < 0) {
        PyErr_SetString(PyExc_ValueError, "offset or budget out of range");
        goto done;
    }
    if (n - offset <= budget)
        end = n;
    else {
        end = rfind_nl(p, offset, offset + budget) + 1;
        if (end <= offset) {
            if (!at_least_one) {
                res = Py_BuildValue("(nn)", offset, (Py_ssize_t)0);
                goto done;
            }
            Py_ssize_t nl = find_nl(p, offset, n);
            end = nl < 0 ? n : nl + 1;
        }
    }
    res = Py_BuildValue("(nn)", end, lines_in(p, offset, end));
done:
    PyBuffer_Release(&b);
    return res;
}

/* ---- LineBatch ------------------------------------------------------------------------------------------- */

static size_t
varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *
put_varint(char *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

typedef struct {
    Py_buffer data;   /* the segment's bytes */
    Py_ssize_t start, end;
    Py_buffer lengths; /* uint32 lengths of data[start:end], or .obj == NULL: found by newlines */
} bpart_t;

static void
bparts_release(bpart_t *ps, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyBuffer_Release(&ps[i].data);
        if (ps[i].lengths.obj != NULL)
            PyBuffer_Release(&ps[i].lengths);
    }
}

/* Every part's line lengths into a new *out (PyMem_RawMalloc: no GIL needed); returns their count, or -1 when
 * out of memory, and sums their varint sizes. */
static Py_ssize_t
batch_scan(bpart_t *ps, Py_ssize_t np, uint32_t **out, size_t *varint_bytes)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        if (ps[i].lengths.obj != NULL)
            k += ps[i].lengths.len / (Py_ssize_t)sizeof(uint32_t);
        else if (ps[i].end > ps[i].start) {
            const char *p = (const char *)ps[i].data.buf;
            k += count_nl(p + ps[i].start, ps[i].end - ps[i].start) + (p[ps[i].end - 1] != '\n');
        }
    }
    uint32_t *o = PyMem_RawMalloc((size_t)(k ? k : 1) * sizeof(uint32_t));
    *out = o;
    if (o == NULL)
        return -1;
    k = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        if (ps[i].lengths.obj != NULL) {
            Py_ssize_t m = ps[i].lengths.len / (Py_ssize_t)sizeof(uint32_t);
            memcpy(o + k, ps[i].lengths.buf, (size_t)m * sizeof(uint32_t));
            k += m;
        }
        else
            k += lengths_into((const char *)ps[i].data.buf + ps[i].start, ps[i].end - ps[i].start, o + k);
    }
    size_t vb = 0;
    for (Py_ssize_t j = 0; j < k; j++)
        vb += o[j] < 0x80 ? 1 : varint_size(o[j]);
    *varint_bytes = vb;
    return k;
}

PyDoc_STRVAR(line_batch_doc,
"line_batch(first_seq, stream, generation, time_ns, parts) -> bytes\n\n"
"A serialised StreamMessage holding one LineBatch, as protobuf writes it. parts is a sequence of\n"
"(data, start, end, lengths): data[start:end] goes into the batch; lengths is None when newlines delimit its\n"
"lines (an unterminated tail is a line), else a buffer of native uint32 line lengths summing to end - start.");

static PyObject *
native_line_batch(PyObject *self, PyObject *args)
{
    unsigned long long first_seq;
    int stream;
    unsigned int generation;
    long long time_ns;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "KiILO:line_batch", &first_seq, &stream, &generation, &time_ns, &seq))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "parts must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t np = PySequence_Fast_GET_SIZE(fast);
    bpart_t *ps = PyMem_Calloc((size_t)(np ? np : 1), sizeof(bpart_t));
    uint32_t *lens = NULL;
    PyObject *res = NULL;
    Py_ssize_t got = 0, size = 0;
    if (ps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < np; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, got);
        PyObject *lengths;
        bpart_t *p = &ps[got];
        if (!PyArg_ParseTuple(item, "y*nnO:line_batch part", &p->data, &p->start, &p->end, &lengths))
            goto done;
        if (p->start < 0 || p->end < p->start || p->end > p->data.len) {
            got++;
            PyErr_SetString(PyExc_ValueError, "part bounds out of range");
            goto done;
        }
        size += p->end - p->start;
        if (lengths != Py_None) {
            if (PyObject_GetBuffer(lengths, &p->lengths, PyBUF_SIMPLE) < 0) {
                got++;
                goto done;
            }
            if (p->lengths.len % (Py_ssize_t)sizeof(uint32_t)) {
                got++;
                PyErr_SetString(PyExc_ValueError, "lengths must be uint32 values");
                goto done;
            }
        }
    }
    if (size > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "batch too large");
        goto done;
    }
    size_t varint_bytes = 0;
    Py_ssize_t nlines;
    if (size < NOGIL_BYTES)
        nlines = batch_scan(ps, np, &lens, &varint_bytes);
    else {
        Py_BEGIN_ALLOW_THREADS
        nlines = batch_scan(ps, np, &lens, &varint_bytes);
        Py_END_ALLOW_THREADS
    }
    if (nlines < 0) {
        PyErr_NoMemory();
        goto done;
    }
    /* Timestamp: seconds floor(ns / 1e9), nanos in [0, 1e9). */
    long long secs = time_ns / 1000000000LL, nanos = time_ns % 1000000000LL;
    if (nanos < 0) {
        nanos += 1000000000LL;
        secs -= 1;
    }
    size_t ts_len = (secs ? 1 + varint_size((uint64_t)secs) : 0) + (nanos ? 1 + varint_size((uint64_t)nanos) : 0);
    size_t lb = (first_seq ? 1 + varint_size(first_seq) : 0) + (stream ? 1 + varint_size((uint64_t)(int64_t)stream) : 0)
                + (generation ? 1 + varint_size(generation) : 0) + 1 + varint_size(ts_len) + ts_len
                + (size ? 1 + varint_size((uint64_t)size) + (size_t)size : 0)
                + (nlines ? 1 + varint_size(varint_bytes) + varint_bytes : 0);
    size_t total = 1 + varint_size(lb) + lb;
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (res == NULL)
        goto done;
    char *o = PyBytes_AS_STRING(res);
    *o++ = 0x0A; /* StreamMessage.lines */
    o = put_varint(o, lb);
    if (first_seq) {
        *o++ = 0x08;
        o = put_varint(o, first_seq);
    }
    if (stream) {
        *o++ = 0x10;
        o = put_varint(o, (uint64_t)(int64_t)stream);
    }
    if (generation) {
        *o++ = 0x18;
        o = put_varint(o, generation);
    }
    *o++ = 0x22;
    o = put_varint(o, ts_len);
    if (secs) {
        *o++ = 0x08;
        o = put_varint(o, (uint64_t)secs);
    }
    if (nanos) {
        *o++ = 0x10;
        o = put_varint(o, (uint64_t)nanos);
    }
    if (size) {
        *o++ = 0x2A;
        o = put_varint(o, (uint64_t)size);
        for (Py_ssize_t i = 0; i < np; i++) {
            Py_ssize_t m = ps[i].end - ps[i].start;
            memcpy(o, (const char *)ps[i].data.buf + ps[i].start, (size_t)m);
            o += m;
        }
    }
    if (nlines) {
        *o++ = 0x32;
        o = put_varint(o, varint_bytes);
        for (Py_ssize_t j = 0; j < nlines; j++) {
            uint32_t v = lens[j];
            if (v < 0x80)
                *o++ = (char)v;
            else
                o = put_varint(o, v);
        }
    }
    assert(o == PyBytes_AS_STRING(res) + total);
done:
    if (ps != NULL)
        bparts_release(ps, got);
    PyMem_Free(ps);
    PyMem_RawFree(lens);
    Py_DECREF(fast);
    return res;
}

/* ---- module ---------------------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"cut", native_cut, METH_VARARGS, cut_doc},
    {"read_cut", native_read_cut, METH_VARARGS, read_cut_doc},
    {"line_count", native_line_count, METH_VARARGS, line_count_doc},
    {"line_lengths", native_line_lengths, METH_VARARGS, line_lengths_doc},
    {"line_offset", native_line_offset, METH_VARARGS, line_offset_doc},
    {"take", native_take, METH_VARARGS, take_doc},
    {"line_batch", native_line_batch, METH_VARARGS, line_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "supervisor._daemon.output._native",
    "The output path's hot loops in C; see core.py for the pure-Python references.",
    -1,
    native_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    const char *no_avx2 = getenv("SUPD_NATIVE_NO_AVX2"); /* set and not empty: the SSE2 count (tests) */
    use_avx2 = __builtin_cpu_supports("avx2") && !(no_avx2 && *no_avx2);
#endif
    PyObject *m = PyModule_Create(&native_module);
    if (m != NULL && PyModule_AddStringConstant(m, "COUNT_PATH", use_avx2 ? "avx2" : "sse2") < 0)
        Py_CLEAR(m);
    return m;
}
