/* Capture rows laid out as columns: the optional compiled half of evtkit/_columns.py (whose
 * numpy/Arrow path is the reference, and the fallback when this was not built).
 *
 * split(rows, names, cloudevents, traceparent, time, threads) returns the rows' fields (layout:
 * evtkit.observation.ROW_FIELDS) as memory Arrow takes without a copy, in three phases:
 *
 * 1. Holding the GIL, one look at each row's Python objects: shapes and types, times as
 *    int64, text fields dictionary-encoded, which rows have an ``extra``, and the length of
 *    every byte field, so each byte column gets its exact size and offsets up front.
 * 2. Without the GIL, on ``threads`` threads (up to 8, each a range of rows): the bytes copied
 *    into their columns, and each header block split while its bytes are in the CPU's
 *    caches — the first value of every known header name (trimmed of blanks; a blank one
 *    is missing), how many lines the block has, how many name a CloudEvents header, how
 *    many have no colon, and the traceparent: its trace id, parent id and sampled flag
 *    when it has the usual 55 characters, else the whole value for the general rule; and
 *    the ce-time as UTC nanoseconds when it is an RFC 3339 time with every field in range
 *    (any other value shaped so is left to the general rule). Reading the bytes without
 *    the GIL is safe: bytes and tuples never change, and the rows are held for the whole
 *    call.
 * 3. Each thread's values of the known names laid end to end, one column per name.
 *
 * The header rules are those of evtkit._headers.parse_block; the tests check that the two
 * agree on hostile blocks. Rows not shaped as capture makes them raise TypeError (the
 * caller then takes the reference path, which says what is wrong), and a byte column
 * over 2 GiB OverflowError (the reference path cuts it into chunks). Every read stays
 * inside the bytes object it belongs to. Threads are POSIX threads: where there are none
 * (Windows) this does not build, and evtkit takes the reference path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND, TS, OBSERVER, CONSUMER, QUEUE, SUBJECT, REPLY, PAYLOAD, HEADERS, EXTRA, FIELDS };
enum { MAX_NAMES = 32, MAX_THREADS = 8, TP_LEN = 55, TRACE_LEN = 32, PARENT_LEN = 16 };
static const Py_ssize_t LARGEST = INT32_MAX; /* bytes a binary column (int32 offsets) holds */
static const int BINARY[] = {SUBJECT, REPLY, PAYLOAD, HEADERS};
static const int TEXT[] = {KIND, OBSERVER, CONSUMER, QUEUE};
enum { NBIN = 4, NTEXT = 4 };

/* -- memory handed to Python ---------------------------------------------------------------- */

/* A block of malloc'ed memory that Python sees through the buffer protocol and frees. */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;
} Memory;

static void memory_dealloc(Memory *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int memory_getbuffer(Memory *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 0, flags);
}

static PyBufferProcs memory_as_buffer = {(getbufferproc)memory_getbuffer, NULL};

static PyTypeObject MemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evtkit._columnar.Memory",
    .tp_basicsize = sizeof(Memory),
    .tp_dealloc = (destructor)memory_dealloc,
    .tp_as_buffer = &memory_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory a column was written to (freed with this object).",
};

/* ``data`` (malloc'ed) as a Memory object of ``size`` bytes. The memory is taken whether or
 * not this succeeds: the caller forgets its pointer either way. */
static PyObject *hand_over(void *data, Py_ssize_t size) {
    Memory *m = PyObject_New(Memory, &MemoryType);
    if (m == NULL) {
        free(data);
        return NULL;
    }
    m->data = data;
    m->size = size;
    return (PyObject *)m;
}

/* -- buffers (no Python API: used without the GIL) --------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_init(Buf *b, Py_ssize_t cap) {
    b->cap = cap > 64 ? cap : 64;
    b->len = 0;
    b->data = malloc((size_t)b->cap);
    return b->data == NULL ? -1 : 0;
}

static int buf_put(Buf *b, const char *src, Py_ssize_t size) {
    if (size > b->cap - b->len) {
        Py_ssize_t cap = b->cap;
        while (size > cap - b->len) {
            if (cap > PY_SSIZE_T_MAX / 2) return -1;
            cap *= 2;
        }
        char *grown = realloc(b->data, (size_t)cap);
        if (grown == NULL) return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, (size_t)size);
    b->len += size;
    return 0;
}

/* A binary column of ``rows`` rows: values back to back, rows + 1 int64 offsets, and a
 * validity byte per row. */
typedef struct {
    Buf data;
    int64_t *offsets;
    uint8_t *valid;
    Py_ssize_t rows, nulls;
} Col;

static int col_init(Col *c, Py_ssize_t rows, Py_ssize_t cap) {
    c->rows = rows;
    c->nulls = 0;
    c->offsets = malloc((size_t)(rows + 1) * sizeof(int64_t));
    c->valid = calloc((size_t)rows + 1, 1);
    if (c->offsets == NULL || c->valid == NULL || buf_init(&c->data, cap) < 0) return -1;
    c->offsets[0] = 0;
    return 0;
}

/* Row i (counted in this column) ends: its offset, and a null unless valid was set. */
static inline void col_end(Col *c, Py_ssize_t i) {
    c->offsets[i + 1] = c->data.len;
    c->nulls += !c->valid[i];
}

static void col_free(Col *c) {
    free(c->data.data);
    free(c->offsets);
    free(c->valid);
    memset(c, 0, sizeof *c);
}

/* (data, offsets, valid, nulls, rows), the memory handed over; NULL on error. */
static PyObject *col_result(Col *c) {
    PyObject *data = hand_over(c->data.data, c->data.len);
    PyObject *offsets = hand_over(c->offsets, (c->rows + 1) * (Py_ssize_t)sizeof(int64_t));
    PyObject *valid = hand_over(c->valid, c->rows);
    c->data.data = NULL;
    c->offsets = NULL;
    c->valid = NULL;
    if (data == NULL || offsets == NULL || valid == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(offsets);
        Py_XDECREF(valid);
        return NULL;
    }
    return Py_BuildValue("(NNNnn)", data, offsets, valid, c->nulls, c->rows);
}

/* -- text fields (with the GIL) ------------------------------------------------------------ */

/* A text column as dictionary codes (int32, -1 for None) and the distinct values. */
typedef struct {
    PyObject *values, *index, *last;
    int32_t *codes;
    int32_t last_code;
} Dict;

static int dict_init(Dict *d, Py_ssize_t n) {
    d->values = PyList_New(0);
    d->index = PyDict_New();
    d->last = NULL;
    d->last_code = -1;
    d->codes = malloc((size_t)n * sizeof(int32_t) + 1);
    if (d->codes == NULL) PyErr_NoMemory();
    return d->values == NULL || d->index == NULL || d->codes == NULL ? -1 : 0;
}

static int dict_put(Dict *d, Py_ssize_t i, PyObject *value) {
    if (value == Py_None) {
        d->codes[i] = -1;
        return 0;
    }
    if (value != d->last) { /* rows of one source share their str objects */
        PyObject *code = PyDict_GetItemWithError(d->index, value);
        if (code != NULL) {
            d->last_code = (int32_t)PyLong_AsLong(code);
        } else {
            if (PyErr_Occurred()) return -1;
            Py_ssize_t next = PyList_GET_SIZE(d->values);
            if (next >= INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "too many distinct values");
                return -1;
            }
            PyObject *key = PyLong_FromSsize_t(next);
            if (key == NULL) return -1;
            int failed = PyDict_SetItem(d->index, value, key) < 0 ||
                         PyList_Append(d->values, value) < 0;
            Py_DECREF(key);
            if (failed) return -1;
            d->last_code = (int32_t)next;
        }
        d->last = value; /* borrowed: the row keeps it alive for the whole call */
    }
    d->codes[i] = d->last_code;
    return 0;
}

static void dict_free(Dict *d) {
    Py_CLEAR(d->values);
    Py_CLEAR(d->index);
    free(d->codes);
    d->codes = NULL;
}

/* -- header blocks (no Python API) --------------------------------------------------------- */

typedef struct {
    const char *text;
    Py_ssize_t len;
    int cloudevents;
} Name;

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* The known name a key spells (ASCII case ignored), or -1: names of the key's length, first
 * as written (evtkit writes them in lower case), then ignoring case. */
static int known_name(const char *key, Py_ssize_t len, const Name *names, int count) {
    for (int k = 0; k < count; k++)
        if (names[k].len == len && memcmp(key, names[k].text, (size_t)len) == 0) return k;
    for (int k = 0; k < count; k++) {
        if (names[k].len != len) continue;
        Py_ssize_t j = 0;
        while (j < len && lower((unsigned char)key[j]) == (unsigned char)names[k].text[j]) j++;
        if (j == len) return k;
    }
    return -1;
}

static const char *find_crlf(const char *p, const char *end) {
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL || cr + 1 >= end) return NULL;
        if (cr[1] == '\n') return cr;
        p = cr + 1;
    }
    return NULL;
}

static inline int blank(char c) { return c == ' ' || c == '\t'; }

/* What a range of rows is told and writes. Arrays indexed by row are shared (each range
 * writes its own rows); columns of values are the range's own. */
typedef struct {
    PyObject **items; /* the row tuples */
    Py_ssize_t lo, hi;
    const Name *names;
    int count, tp;
    int64_t *const *bin_offsets;
    char *const *bin_data;
    int64_t *counts; /* 3 per row: lines with a colon, CloudEvents lines, lines without */
    uint8_t *sampled, *state; /* per row; state: 0 no traceparent, 1 usual, 2 other */
    int time_k;               /* the ce-time name */
    int64_t *times;           /* per row, ns */
    uint8_t *time_state;      /* per row: 0 none or not RFC 3339, 1 read, 2 for the general rule */
    Col known[MAX_NAMES], trace, parent;
    int failed;
} Range;

/* Split one block (row i of the whole, j of the range): the first value of each known name
 * goes to its column (a blank one is missing), except the traceparent's, which is handed
 * back. As bytes.split(b"\r\n")[1:]: the status line is skipped, and so are empty lines. */
static int split_block(Range *r, const char *p, Py_ssize_t size, Py_ssize_t i, Py_ssize_t j,
                       const char **tp_value, Py_ssize_t *tp_len) {
    const char *end = p + size, *line = find_crlf(p, end);
    int64_t *counts = r->counts + 3 * i;
    char seen[MAX_NAMES] = {0};
    if (line == NULL) return 0;
    for (line += 2;; line += 2) {
        const char *stop = find_crlf(line, end);
        if (stop == NULL) stop = end;
        if (stop > line) {
            const char *colon = memchr(line, ':', (size_t)(stop - line));
            if (colon == NULL) {
                counts[2]++;
            } else {
                counts[0]++;
                int k = colon > line ? known_name(line, colon - line, r->names, r->count) : -1;
                if (k >= 0) {
                    counts[1] += r->names[k].cloudevents;
                    if (!seen[k]) {
                        const char *v = colon + 1, *w = stop;
                        seen[k] = 1;
                        while (v < w && blank(*v)) v++;
                        while (w > v && blank(w[-1])) w--;
                        if (k == r->tp) {
                            *tp_value = v;
                            *tp_len = w - v;
                        } else if (w > v) {
                            if (buf_put(&r->known[k].data, v, w - v) < 0) return -1;
                            r->known[k].valid[j] = 1;
                        }
                    }
                }
            }
        }
        if (stop == end) return 0;
        line = stop;
    }
}

/* HEX[c]: c is a lower-case hex digit. */
static uint8_t HEX[256];

static int zeros(const char *p, Py_ssize_t len) {
    for (Py_ssize_t j = 0; j < len; j++)
        if (p[j] != '0') return 0;
    return 1;
}

/* A 55-character traceparent: 1 and its parts if valid (as _traceparent55 decides), else 0;
 * -1 if out of memory. */
static int traceparent(Range *r, const char *v, Py_ssize_t i, Py_ssize_t j) {
    const unsigned char *u = (const unsigned char *)v;
    unsigned ok = (u[2] == '-') & (u[35] == '-') & (u[52] == '-') & HEX[u[0]] & HEX[u[1]] &
                  HEX[u[53]] & HEX[u[54]];
    for (int k = 3; k < 35; k++) ok &= HEX[u[k]];
    for (int k = 36; k < 52; k++) ok &= HEX[u[k]];
    if (!ok || (v[0] == 'f' && v[1] == 'f') || zeros(v + 3, TRACE_LEN) || zeros(v + 36, PARENT_LEN))
        return 0;
    if (buf_put(&r->trace.data, v + 3, TRACE_LEN) < 0 || buf_put(&r->parent.data, v + 36, PARENT_LEN) < 0)
        return -1;
    r->trace.valid[j] = r->parent.valid[j] = 1;
    r->sampled[i] = (u[54] <= '9' ? u[54] - '0' : u[54] - 'a' + 10) & 1;
    return 1;
}

static int digits(const char *p, int count, int *out) {
    int x = 0;
    for (int k = 0; k < count; k++) {
        if (p[k] < '0' || p[k] > '9') return 0;
        x = x * 10 + (p[k] - '0');
    }
    *out = x;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap);
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* An RFC 3339 time (the shape of evtkit.event.RFC3339): 0 if not one; 1 and its UTC
 * nanoseconds when every field is in range in the years 1678-2261 (inside what a trace can
 * hold whatever the offset); 2 for anything else shaped so (month 13, second 60, year
 * 9999...), which the general rule decides. */
static int rfc3339(const char *v, Py_ssize_t len, int64_t *ns) {
    int y, mo, d, h, mi, s, oh = 0, om = 0, sign = 0;
    if (len < 20 || !digits(v, 4, &y) || v[4] != '-' || !digits(v + 5, 2, &mo) || v[7] != '-' ||
        !digits(v + 8, 2, &d) || (v[10] != 'T' && v[10] != 't') || !digits(v + 11, 2, &h) ||
        v[13] != ':' || !digits(v + 14, 2, &mi) || v[16] != ':' || !digits(v + 17, 2, &s))
        return 0;
    Py_ssize_t at = 19;
    int64_t fraction = 0;
    if (v[at] == '.') {
        int count = 0;
        for (at++; at < len && v[at] >= '0' && v[at] <= '9'; at++) {
            if (++count > 9) return 0;
            fraction = fraction * 10 + (v[at] - '0');
        }
        if (count == 0) return 0;
        for (; count < 9; count++) fraction *= 10;
    }
    if (at == len - 1 && (v[at] == 'Z' || v[at] == 'z')) {
        sign = 0;
    } else if (at == len - 6 && (v[at] == '+' || v[at] == '-') && digits(v + at + 1, 2, &oh) &&
               v[at + 3] == ':' && digits(v + at + 4, 2, &om)) {
        sign = v[at] == '+' ? 1 : -1;
    } else {
        return 0;
    }
    if (y < 1678 || y > 2261 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || s > 59 || oh > 23 || om > 59)
        return 2;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s -
                      sign * (oh * 3600 + om * 60);
    *ns = seconds * 1000000000 + fraction;
    return 1;
}

/* Phase 2 for one range of rows. */
static void *copy_and_split(void *arg) {
    Range *r = arg;
    for (Py_ssize_t i = r->lo; i < r->hi; i++) {
        PyObject **f = &PyTuple_GET_ITEM(r->items[i], 0);
        Py_ssize_t j = i - r->lo;
        for (int b = 0; b < NBIN; b++) {
            PyObject *v = f[BINARY[b]];
            if (v != Py_None)
                memcpy(r->bin_data[b] + r->bin_offsets[b][i], PyBytes_AS_STRING(v),
                       (size_t)PyBytes_GET_SIZE(v));
        }
        const char *tp_value = NULL;
        Py_ssize_t tp_len = 0;
        if (f[HEADERS] != Py_None &&
            split_block(r, PyBytes_AS_STRING(f[HEADERS]), PyBytes_GET_SIZE(f[HEADERS]), i, j,
                        &tp_value, &tp_len) < 0)
            goto failed;
        if (tp_len == TP_LEN) {
            int valid = traceparent(r, tp_value, i, j);
            if (valid < 0) goto failed;
            r->state[i] = (uint8_t)valid;
        } else if (tp_len > 0) {
            if (buf_put(&r->known[r->tp].data, tp_value, tp_len) < 0) goto failed;
            r->known[r->tp].valid[j] = 1;
            r->state[i] = 2;
        }
        Col *time = &r->known[r->time_k];
        if (time->valid[j])
            r->time_state[i] = (uint8_t)rfc3339(time->data.data + time->offsets[j],
                                                time->data.len - time->offsets[j], &r->times[i]);
        for (int k = 0; k < r->count; k++) col_end(&r->known[k], j);
        col_end(&r->trace, j);
        col_end(&r->parent, j);
    }
    return NULL;
failed:
    r->failed = 1;
    return NULL;
}

static void range_free(Range *r) {
    for (int k = 0; k < MAX_NAMES; k++) col_free(&r->known[k]);
    col_free(&r->trace);
    col_free(&r->parent);
}

/* -- the call ------------------------------------------------------------------------------ */

static int text_or_none(PyObject *v) { return v == Py_None || PyUnicode_CheckExact(v); }

/* Everything one call allocates, so one function frees it. */
typedef struct {
    PyObject *rows;
    Dict texts[NTEXT];
    int64_t *ts, *given, *bin_offsets[NBIN], *counts;
    char *bin_data[NBIN];
    uint8_t *bin_valid[NBIN], *sampled, *state, *time_state;
    int64_t *times;
    Py_ssize_t bin_nulls[NBIN];
    Range ranges[MAX_THREADS];
    int threads, count;
    Col merged[MAX_NAMES + 2]; /* the known names', then trace ids and parent ids */
} Work;

static void work_free(Work *w) {
    Py_CLEAR(w->rows);
    for (int t = 0; t < NTEXT; t++) dict_free(&w->texts[t]);
    free(w->ts);
    free(w->given);
    free(w->counts);
    free(w->sampled);
    free(w->state);
    free(w->times);
    free(w->time_state);
    for (int b = 0; b < NBIN; b++) {
        free(w->bin_offsets[b]);
        free(w->bin_data[b]);
        free(w->bin_valid[b]);
    }
    for (int t = 0; t < MAX_THREADS; t++) range_free(&w->ranges[t]);
    for (int k = 0; k < MAX_NAMES + 2; k++) col_free(&w->merged[k]);
}

/* A range's column k: a known name's, or (count, count + 1) its trace and parent ids. */
static Col *range_col(Range *r, int k) {
    return k < r->count ? &r->known[k] : k == r->count ? &r->trace : &r->parent;
}

/* The ranges' columns are laid end to end in the merged ones (sized by the caller): values,
 * offsets shifted by what came before, validity. Each range does its own part. */
typedef struct {
    Work *w;
    int t;
} Part;

static void *merge_part(void *arg) {
    Part *p = arg;
    Range *r = &p->w->ranges[p->t];
    for (int k = 0; k < r->count + 2; k++) {
        Col *from = range_col(r, k), *to = &p->w->merged[k];
        int64_t base = 0;
        for (int t = 0; t < p->t; t++) base += range_col(&p->w->ranges[t], k)->data.len;
        memcpy(to->data.data + base, from->data.data, (size_t)from->data.len);
        for (Py_ssize_t j = 0; j < from->rows; j++) to->offsets[r->lo + j + 1] = base + from->offsets[j + 1];
        memcpy(to->valid + r->lo, from->valid, (size_t)from->rows);
    }
    return NULL;
}

/* Runs fn on every range, one thread each (the first on this one), without the GIL. */
static void in_parallel(Work *w, void *(*fn)(void *), void *args, size_t size) {
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < w->threads; t++)
        started[t] = pthread_create(&ids[t], NULL, fn, (char *)args + t * size) == 0;
    fn(args);
    for (int t = 1; t < w->threads; t++) {
        if (started[t]) pthread_join(ids[t], NULL);
        else fn((char *)args + t * size); /* no thread to be had: do it here */
    }
    Py_END_ALLOW_THREADS
}

/* The ranges' columns as one each; -1 if out of memory. */
static int merge(Work *w, Py_ssize_t n) {
    if (w->threads == 1) { /* one range: its columns are the whole */
        for (int k = 0; k < w->count + 2; k++) {
            w->merged[k] = *range_col(&w->ranges[0], k);
            memset(range_col(&w->ranges[0], k), 0, sizeof(Col));
        }
        return 0;
    }
    for (int k = 0; k < w->count + 2; k++) {
        Col *to = &w->merged[k];
        Py_ssize_t size = 0;
        for (int t = 0; t < w->threads; t++) {
            Col *from = range_col(&w->ranges[t], k);
            size += from->data.len;
            to->nulls += from->nulls;
        }
        Py_ssize_t nulls = to->nulls;
        if (col_init(to, n, size + 1) < 0) return -1;
        to->nulls = nulls;
        to->data.len = size;
    }
    Part parts[MAX_THREADS];
    for (int t = 0; t < w->threads; t++) parts[t] = (Part){w, t};
    in_parallel(w, merge_part, parts, sizeof(Part));
    for (int t = 0; t < w->threads; t++) range_free(&w->ranges[t]);
    return 0;
}

/* Phase 1: the Python objects of every row. Returns the number of rows with an extra. */
static Py_ssize_t read_objects(Work *w, Py_ssize_t n) {
    PyObject **items = &PyTuple_GET_ITEM(w->rows, 0);
    Py_ssize_t given = 0, size[NBIN] = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = items[i];
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != FIELDS) goto shape;
        PyObject **f = &PyTuple_GET_ITEM(row, 0);
        if (!PyUnicode_CheckExact(f[KIND]) || !PyUnicode_CheckExact(f[OBSERVER]) ||
            !text_or_none(f[CONSUMER]) || !text_or_none(f[QUEUE]) || !PyLong_Check(f[TS]))
            goto shape;
        long long when = PyLong_AsLongLong(f[TS]);
        if (when == -1 && PyErr_Occurred()) return -1;
        w->ts[i] = when;
        for (int t = 0; t < NTEXT; t++)
            if (dict_put(&w->texts[t], i, f[TEXT[t]]) < 0) return -1;
        if (f[EXTRA] != Py_None) w->given[given++] = i;
        for (int b = 0; b < NBIN; b++) {
            PyObject *v = f[BINARY[b]];
            w->bin_offsets[b][i] = size[b];
            if (v == Py_None) {
                w->bin_nulls[b]++;
            } else if (PyBytes_CheckExact(v)) {
                if (PyBytes_GET_SIZE(v) > LARGEST - size[b]) goto too_big;
                w->bin_valid[b][i] = 1;
                size[b] += PyBytes_GET_SIZE(v);
            } else {
                goto shape;
            }
        }
    }
    for (int b = 0; b < NBIN; b++) {
        w->bin_offsets[b][n] = size[b];
        w->bin_data[b] = malloc((size_t)size[b] + 1);
        if (w->bin_data[b] == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return given;
shape:
    PyErr_SetString(PyExc_TypeError, "not a capture row");
    return -1;
too_big:
    PyErr_SetString(PyExc_OverflowError, "a byte column over 2 GiB (Arrow's binary offsets)");
    return -1;
}

static PyObject *results(Work *w, Py_ssize_t n, Py_ssize_t given, int count) {
    PyObject *texts = PyTuple_New(NTEXT), *bins = PyTuple_New(NBIN), *known = PyTuple_New(count);
    PyObject *out = NULL;
    if (texts == NULL || bins == NULL || known == NULL) goto done;
    for (int t = 0; t < NTEXT; t++) {
        PyObject *codes = hand_over(w->texts[t].codes, n * (Py_ssize_t)sizeof(int32_t));
        w->texts[t].codes = NULL;
        PyObject *pair = codes == NULL ? NULL : Py_BuildValue("(NO)", codes, w->texts[t].values);
        if (pair == NULL) goto done;
        PyTuple_SET_ITEM(texts, t, pair);
    }
    for (int b = 0; b < NBIN; b++) {
        PyObject *data = hand_over(w->bin_data[b], w->bin_offsets[b][n]);
        PyObject *offsets = hand_over(w->bin_offsets[b], (n + 1) * (Py_ssize_t)sizeof(int64_t));
        PyObject *valid = hand_over(w->bin_valid[b], n);
        w->bin_data[b] = NULL;
        w->bin_offsets[b] = NULL;
        w->bin_valid[b] = NULL;
        if (data == NULL || offsets == NULL || valid == NULL) {
            Py_XDECREF(data);
            Py_XDECREF(offsets);
            Py_XDECREF(valid);
            goto done;
        }
        PyTuple_SET_ITEM(bins, b, Py_BuildValue("(NNNnn)", data, offsets, valid, w->bin_nulls[b], n));
        if (PyTuple_GET_ITEM(bins, b) == NULL) goto done;
    }
    for (int k = 0; k < count; k++) {
        PyObject *c = col_result(&w->merged[k]);
        if (c == NULL) goto done;
        PyTuple_SET_ITEM(known, k, c);
    }
    out = Py_BuildValue(
        "(NONOON(NNNN)(NN))", hand_over(w->ts, n * (Py_ssize_t)sizeof(int64_t)), texts,
        hand_over(w->given, given * (Py_ssize_t)sizeof(int64_t)), bins, known,
        hand_over(w->counts, 3 * n * (Py_ssize_t)sizeof(int64_t)),
        col_result(&w->merged[count]), col_result(&w->merged[count + 1]), hand_over(w->sampled, n),
        hand_over(w->state, n), hand_over(w->times, n * (Py_ssize_t)sizeof(int64_t)),
        hand_over(w->time_state, n));
    w->ts = w->given = w->counts = w->times = NULL; /* taken, whatever became of them */
    w->sampled = w->state = w->time_state = NULL;
done:
    Py_XDECREF(texts);
    Py_XDECREF(bins);
    Py_XDECREF(known);
    return out;
}

static PyObject *split(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *rows_in, *names_in, *cloud_in;
    Py_ssize_t tp, time_k;
    int threads;
    if (!PyArg_ParseTuple(args, "OO!O!nni", &rows_in, &PyTuple_Type, &names_in, &PyTuple_Type,
                          &cloud_in, &tp, &time_k, &threads))
        return NULL;
    int count = (int)PyTuple_GET_SIZE(names_in);
    if (count > MAX_NAMES || PyTuple_GET_SIZE(cloud_in) != count || tp < 0 || tp >= count ||
        time_k < 0 || time_k >= count || time_k == tp) {
        PyErr_SetString(PyExc_ValueError, "names, cloudevents, traceparent and time disagree");
        return NULL;
    }
    Name names[MAX_NAMES];
    for (int k = 0; k < count; k++) {
        PyObject *name = PyTuple_GET_ITEM(names_in, k);
        PyObject *cloud = PyTuple_GET_ITEM(cloud_in, k);
        int lower_case = PyBytes_Check(name) && PyBytes_GET_SIZE(name) > 0;
        for (Py_ssize_t j = 0; lower_case && j < PyBytes_GET_SIZE(name); j++)
            lower_case = lower((unsigned char)PyBytes_AS_STRING(name)[j]) ==
                         (unsigned char)PyBytes_AS_STRING(name)[j];
        if (!lower_case || !PyBool_Check(cloud)) {
            PyErr_SetString(PyExc_ValueError, "names must be non-empty lower-case bytes, "
                                              "cloudevents bools");
            return NULL;
        }
        names[k] = (Name){PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), cloud == Py_True};
    }
    Work w;
    memset(&w, 0, sizeof w);
    /* A tuple of the rows: nothing (not even a finalizer the garbage collector runs while
     * this allocates) can change what is read, and it holds every row until the end. */
    w.rows = PySequence_Tuple(rows_in);
    if (w.rows == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(w.rows);
    PyObject *out = NULL;
    for (int t = 0; t < NTEXT; t++)
        if (dict_init(&w.texts[t], n) < 0) goto done;
    w.ts = malloc((size_t)n * 8 + 1);
    w.given = malloc((size_t)n * 8 + 1);
    w.counts = calloc((size_t)n * 3 + 1, 8);
    w.sampled = calloc((size_t)n + 1, 1);
    w.state = calloc((size_t)n + 1, 1);
    w.times = calloc((size_t)n + 1, 8);
    w.time_state = calloc((size_t)n + 1, 1);
    int missing = !w.ts || !w.given || !w.counts || !w.sampled || !w.state || !w.times ||
                  !w.time_state;
    for (int b = 0; b < NBIN; b++) {
        w.bin_offsets[b] = malloc((size_t)(n + 1) * 8);
        w.bin_valid[b] = calloc((size_t)n + 1, 1);
        missing |= !w.bin_offsets[b] || !w.bin_valid[b];
    }
    if (missing) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t given = read_objects(&w, n);
    if (given < 0) goto done;

    /* Phase 2: a range of rows per thread (the caller decides how many are worth it). */
    w.count = count;
    w.threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    for (int t = 0; t < w.threads; t++) {
        Range *r = &w.ranges[t];
        r->items = &PyTuple_GET_ITEM(w.rows, 0);
        r->lo = n * t / w.threads;
        r->hi = n * (t + 1) / w.threads;
        r->names = names;
        r->count = count;
        r->tp = (int)tp;
        r->bin_offsets = w.bin_offsets;
        r->bin_data = w.bin_data;
        r->counts = w.counts;
        r->sampled = w.sampled;
        r->state = w.state;
        r->time_k = (int)time_k;
        r->times = w.times;
        r->time_state = w.time_state;
        Py_ssize_t rows = r->hi - r->lo;
        int bad = col_init(&r->trace, rows, rows * TRACE_LEN / 4) < 0 ||
                  col_init(&r->parent, rows, rows * PARENT_LEN / 4) < 0;
        for (int k = 0; k < count; k++) bad |= col_init(&r->known[k], rows, rows * 4) < 0;
        if (bad) {
            PyErr_NoMemory();
            goto done;
        }
    }
    in_parallel(&w, copy_and_split, w.ranges, sizeof(Range));
    for (int t = 0; t < w.threads; t++)
        if (w.ranges[t].failed) {
            PyErr_NoMemory();
            goto done;
        }
    if (merge(&w, n) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    out = results(&w, n, given, count);
done:
    work_free(&w);
    return out;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(rows, names, cloudevents, traceparent, time, threads) -> the rows' fields as "
     "columns"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_columnar",
                                    "Capture rows laid out as columns.", -1, methods};

PyMODINIT_FUNC PyInit__columnar(void) {
    for (int c = '0'; c <= '9'; c++) HEX[c] = 1;
    for (int c = 'a'; c <= 'f'; c++) HEX[c] = 1;
    if (PyType_Ready(&MemoryType) < 0) return NULL;
    return PyModule_Create(&module);
}
