/* The per-row loops of a bundle read, compiled (docs/design.md, "The compiled hot path").
 *
 * Each function here is the C form of a Python function that stays in the code base
 * and is used when this module is not built (service/native.py picks one or the
 * other). The tests give both the same inputs and compare the outputs byte for byte
 * (tests/core/test_native.py). Nothing here holds state or releases the GIL: each
 * call is a loop over one request's keys or rows, doing what the Python loop does
 * without an interpreter step per element.
 *
 *   keys(prefix, ids, suffix)            prefix + decimal id + suffix, per id
 *   maybe_stored(bits, nbits, keys)      the Bloom filter's lookup (store/presence.py)
 *   l1_get(get, keys, now, miss)         L1's lookup of (expires_at, value) entries
 *   resolve(got, now_ms, max_age_ms, default_row, unavailable, statuses)
 *                                        a view's statuses and ages (core/service.py)
 *   join_json(parts)                     an HTTP answer: bytes and views' entities
 *                                        joined in one buffer (http/encode.py)
 *   view_block(head, string_heads, vector_heads, rows, statuses, ages, parts)
 *                                        a gRPC ViewBlock message (grpc/wire.py)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Decimal digits of v (at most 20) into the end of buf[24]; returns the first one. */
static char *
format_u64(uint64_t v, char *end)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

/* A non-negative int that fits in int64 (ids are checked before they get here). */
static int
id_of(PyObject *obj, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int id, got %.50s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "negative id");
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int
check_args(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

static int
need(PyObject *obj, int ok, const char *what)
{
    if (!ok)
        PyErr_Format(PyExc_TypeError, "expected %s, got %.50s", what, Py_TYPE(obj)->tp_name);
    return ok;
}

/* keys(prefix: bytes, ids: list[int], suffix: bytes) -> list[bytes] */
static PyObject *
keys(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("keys", nargs, 3) < 0)
        return NULL;
    PyObject *prefix = args[0], *ids = args[1], *suffix = args[2];
    if (!need(prefix, PyBytes_Check(prefix), "bytes") || !need(ids, PyList_Check(ids), "a list")
        || !need(suffix, PyBytes_Check(suffix), "bytes"))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), slen = PyBytes_GET_SIZE(suffix);
    const char *p = PyBytes_AS_STRING(prefix), *s = PyBytes_AS_STRING(suffix);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    char digits[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v;
        if (id_of(PyList_GET_ITEM(ids, i), &v) < 0)
            goto fail;
        char *d = format_u64(v, digits + sizeof digits);
        Py_ssize_t dlen = digits + sizeof digits - d;
        PyObject *key = PyBytes_FromStringAndSize(NULL, plen + dlen + slen);
        if (key == NULL)
            goto fail;
        char *k = PyBytes_AS_STRING(key);
        memcpy(k, p, plen);
        memcpy(k + plen, d, dlen);
        memcpy(k + plen + dlen, s, slen);
        PyList_SET_ITEM(out, i, key);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* maybe_stored(bits: buffer of uint8, nbits: int, keys: list[bytes]) -> list[int]
 * The indexes of the keys whose 3 bits are all set (may be stored), in order.
 * Position i of a key is (h1 + i * h2) mod nbits, i = 0, 1, 2, with h = hash(key) as
 * uint64, h1 = its low 32 bits, h2 = its high 32 bits | 1: PresenceFilter._positions. */
static PyObject *
maybe_stored(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("maybe_stored", nargs, 3) < 0)
        return NULL;
    PyObject *keys = args[2];
    if (!need(keys, PyList_Check(keys), "a list"))
        return NULL;
    unsigned long long nbits = PyLong_AsUnsignedLongLong(args[1]);
    if (nbits == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *bits = view.buf;
    if (nbits == 0 || (unsigned long long)view.len * 8 < nbits) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "the bit array is shorter than nbits");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t h = PyObject_Hash(PyList_GET_ITEM(keys, i));
        if (h == -1 && PyErr_Occurred())
            goto fail;
        uint64_t u = (uint64_t)(int64_t)h;
        uint64_t h1 = u & 0xFFFFFFFFu, h2 = (u >> 32) | 1u;
        int all = 1;
        for (uint64_t j = 0; j < 3 && all; j++) {
            uint64_t pos = (h1 + j * h2) % nbits;
            all = (bits[pos >> 3] >> (pos & 7)) & 1;
        }
        if (all) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL)
                goto fail;
            int failed = PyList_Append(out, index);
            Py_DECREF(index);
            if (failed < 0)
                goto fail;
        }
    }
    PyBuffer_Release(&view);
    return out;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

/* l1_get(get, keys: list[bytes], now: float, miss) -> list
 * `get(key)` returns None or an (expires_at, value) tuple: value if expires_at > now,
 * else `miss` (L1Cache.get_many). */
static PyObject *
l1_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("l1_get", nargs, 4) < 0)
        return NULL;
    PyObject *get = args[0], *keys = args[1], *miss = args[3];
    if (!need(keys, PyList_Check(keys), "a list"))
        return NULL;
    double now = PyFloat_AsDouble(args[2]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(keys)) { /* `get` is any callable: it may change `keys` */
            PyErr_SetString(PyExc_RuntimeError, "keys changed during the lookup");
            goto fail;
        }
        PyObject *key = PyList_GET_ITEM(keys, i);
        Py_INCREF(key);
        PyObject *entry = PyObject_CallOneArg(get, key);
        Py_DECREF(key);
        if (entry == NULL)
            goto fail;
        PyObject *value = miss;
        if (entry != Py_None) {
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
                PyErr_SetString(PyExc_TypeError, "an L1 entry is an (expires_at, value) tuple");
                Py_DECREF(entry);
                goto fail;
            }
            double expires = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 0));
            if (expires == -1.0 && PyErr_Occurred()) {
                Py_DECREF(entry);
                goto fail;
            }
            if (expires > now)
                value = PyTuple_GET_ITEM(entry, 1);
        }
        Py_INCREF(value);
        Py_DECREF(entry);
        PyList_SET_ITEM(out, i, value);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* resolve(got: list, now_ms: int, max_age_ms: int, default_row, unavailable,
 *         statuses: tuple(FOUND, STALE, DEFAULTED, UNAVAILABLE))
 *   -> (rows, statuses, ages, (n_found, n_stale, n_defaulted, n_unavailable))
 * A row is a tuple whose item 0 is its event time in ms. `rows` is `got` itself when
 * every row was found (FeatureService._resolve). */
static PyObject *
resolve(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("resolve", nargs, 6) < 0)
        return NULL;
    PyObject *got = args[0], *deflt = args[3], *unavailable = args[4], *names = args[5];
    if (!need(got, PyList_Check(got), "a list")
        || !need(names, PyTuple_Check(names) && PyTuple_GET_SIZE(names) == 4,
                 "a tuple of 4 statuses"))
        return NULL;
    long long now = PyLong_AsLongLong(args[1]);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    long long max_age = PyLong_AsLongLong(args[2]);
    if (max_age == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(got);
    Py_ssize_t counts[4] = {0, 0, 0, 0};
    int all_found = 1;
    for (Py_ssize_t i = 0; i < n && all_found; i++) {
        PyObject *r = PyList_GET_ITEM(got, i);
        all_found = r != Py_None && r != unavailable;
    }
    PyObject *rows = NULL, *statuses = PyList_New(n), *ages = PyList_New(n);
    if (statuses == NULL || ages == NULL)
        goto fail;
    if (all_found) {
        rows = got;
        Py_INCREF(rows);
    }
    else if ((rows = PyList_New(n)) == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(got, i);
        PyObject *row = r;
        int status;
        long long age = -1;
        if (r == Py_None) {
            row = deflt;
            status = 2;
        }
        else if (r == unavailable) {
            row = deflt;
            status = 3;
        }
        else {
            if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) < 1) {
                PyErr_SetString(PyExc_TypeError, "a row is a tuple starting with its event time");
                goto fail;
            }
            long long event_time = PyLong_AsLongLong(PyTuple_GET_ITEM(r, 0));
            if (event_time == -1 && PyErr_Occurred())
                goto fail;
            age = now - event_time;
            status = age <= max_age ? 0 : 1;
        }
        counts[status]++;
        if (!all_found) {
            Py_INCREF(row);
            PyList_SET_ITEM(rows, i, row);
        }
        PyObject *name = PyTuple_GET_ITEM(names, status);
        Py_INCREF(name);
        PyList_SET_ITEM(statuses, i, name);
        PyObject *a = PyLong_FromLongLong(age);
        if (a == NULL)
            goto fail;
        PyList_SET_ITEM(ages, i, a);
    }
    PyObject *count_tuple = Py_BuildValue("(nnnn)", counts[0], counts[1], counts[2], counts[3]);
    if (count_tuple == NULL)
        goto fail;
    return Py_BuildValue("(NNNN)", rows, statuses, ages, count_tuple);
fail:
    Py_XDECREF(rows);
    Py_XDECREF(statuses);
    Py_XDECREF(ages);
    return NULL;
}

static char *
put_bytes(char *w, PyObject *b)
{
    memcpy(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    return w + PyBytes_GET_SIZE(b);
}

/* One view's entities in an HTTP answer, described by a tuple
 * (id_prefix: bytes, ids: list[int], id_suffix: bytes, rows: list[tuple], statuses: list,
 *  status_json: dict, json_index: int):
 * `{"id":<prefix><id><suffix>,"features":{<row[json_index]>},"status":{<status_json[s]>}}`
 * per entity, separated by commas (service/http/encode.py). */
static const char ID_OPEN[] = "{\"id\":";
static const char FEATURES_OPEN[] = ",\"features\":{";
static const char STATUS_OPEN[] = "},\"status\":{";
static const char ENTITY_CLOSE[] = "}}";
#define LIT(s) (sizeof(s) - 1)

/* Check a section tuple and add its size to *total; -1 on error. */
static int
section_size(PyObject *section, Py_ssize_t *total)
{
    if (!PyTuple_Check(section) || PyTuple_GET_SIZE(section) != 7) {
        PyErr_SetString(PyExc_TypeError, "a section is bytes or a tuple of 7 items");
        return -1;
    }
    PyObject *prefix = PyTuple_GET_ITEM(section, 0), *ids = PyTuple_GET_ITEM(section, 1);
    PyObject *suffix = PyTuple_GET_ITEM(section, 2), *rows = PyTuple_GET_ITEM(section, 3);
    PyObject *statuses = PyTuple_GET_ITEM(section, 4), *status_json = PyTuple_GET_ITEM(section, 5);
    if (!need(prefix, PyBytes_Check(prefix), "bytes") || !need(ids, PyList_Check(ids), "a list")
        || !need(suffix, PyBytes_Check(suffix), "bytes")
        || !need(rows, PyList_Check(rows), "a list")
        || !need(statuses, PyList_Check(statuses), "a list")
        || !need(status_json, PyDict_Check(status_json), "a dict"))
        return -1;
    Py_ssize_t json_index = PyLong_AsSsize_t(PyTuple_GET_ITEM(section, 6));
    if (json_index == -1 && PyErr_Occurred())
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (PyList_GET_SIZE(rows) != n || PyList_GET_SIZE(statuses) != n) {
        PyErr_SetString(PyExc_ValueError, "ids, rows and statuses differ in length");
        return -1;
    }
    const Py_ssize_t fixed = LIT(ID_OPEN) + PyBytes_GET_SIZE(prefix) + PyBytes_GET_SIZE(suffix)
                             + LIT(FEATURES_OPEN) + LIT(STATUS_OPEN) + LIT(ENTITY_CLOSE) + 1;
    char digits[24];
    if (n)
        *total -= 1; /* no comma after the last entity */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v;
        if (id_of(PyList_GET_ITEM(ids, i), &v) < 0)
            return -1;
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) <= json_index || json_index < 0) {
            PyErr_SetString(PyExc_TypeError, "a row is a tuple holding its JSON fragment");
            return -1;
        }
        PyObject *json = PyTuple_GET_ITEM(row, json_index);
        PyObject *sj = PyDict_GetItemWithError(status_json, PyList_GET_ITEM(statuses, i));
        if (sj == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "a status with no JSON form");
            return -1;
        }
        if (!need(json, PyBytes_Check(json), "bytes") || !need(sj, PyBytes_Check(sj), "bytes"))
            return -1;
        *total += fixed + (digits + sizeof digits - format_u64(v, digits + sizeof digits))
                  + PyBytes_GET_SIZE(json) + PyBytes_GET_SIZE(sj);
    }
    return 0;
}

/* Write a section checked by section_size; returns the end. */
static char *
section_write(PyObject *section, char *w)
{
    PyObject *prefix = PyTuple_GET_ITEM(section, 0), *ids = PyTuple_GET_ITEM(section, 1);
    PyObject *suffix = PyTuple_GET_ITEM(section, 2), *rows = PyTuple_GET_ITEM(section, 3);
    PyObject *statuses = PyTuple_GET_ITEM(section, 4), *status_json = PyTuple_GET_ITEM(section, 5);
    Py_ssize_t json_index = PyLong_AsSsize_t(PyTuple_GET_ITEM(section, 6));
    Py_ssize_t n = PyList_GET_SIZE(ids);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), slen = PyBytes_GET_SIZE(suffix);
    const char *p = PyBytes_AS_STRING(prefix), *s = PyBytes_AS_STRING(suffix);
    char digits[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v = (uint64_t)PyLong_AsLongLong(PyList_GET_ITEM(ids, i));
        PyObject *json = PyTuple_GET_ITEM(PyList_GET_ITEM(rows, i), json_index);
        PyObject *sj = PyDict_GetItem(status_json, PyList_GET_ITEM(statuses, i));
        char *d = format_u64(v, digits + sizeof digits);
        Py_ssize_t dlen = digits + sizeof digits - d;
        if (i)
            *w++ = ',';
        memcpy(w, ID_OPEN, LIT(ID_OPEN)), w += LIT(ID_OPEN);
        memcpy(w, p, plen), w += plen;
        memcpy(w, d, dlen), w += dlen;
        memcpy(w, s, slen), w += slen;
        memcpy(w, FEATURES_OPEN, LIT(FEATURES_OPEN)), w += LIT(FEATURES_OPEN);
        memcpy(w, PyBytes_AS_STRING(json), PyBytes_GET_SIZE(json)), w += PyBytes_GET_SIZE(json);
        memcpy(w, STATUS_OPEN, LIT(STATUS_OPEN)), w += LIT(STATUS_OPEN);
        memcpy(w, PyBytes_AS_STRING(sj), PyBytes_GET_SIZE(sj)), w += PyBytes_GET_SIZE(sj);
        memcpy(w, ENTITY_CLOSE, LIT(ENTITY_CLOSE)), w += LIT(ENTITY_CLOSE);
    }
    return w;
}

/* join_json(parts: list) -> bytes
 * The parts in order, each bytes (copied as it is) or a section tuple (its entities):
 * a whole answer in one buffer, every byte copied once. */
static PyObject *
join_json(PyObject *self, PyObject *parts)
{
    if (!need(parts, PyList_Check(parts), "a list"))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(parts), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        if (PyBytes_Check(part))
            total += PyBytes_GET_SIZE(part);
        else if (section_size(part, &total) < 0)
            return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        w = PyBytes_Check(part) ? put_bytes(w, part) : section_write(part, w);
    }
    if (w != PyBytes_AS_STRING(out) + total) { /* cannot happen: sizes were added up above */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "join_json: size mismatch");
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ gRPC view blocks */

static Py_ssize_t
varint_size(uint64_t v)
{
    Py_ssize_t n = 1;
    while (v > 0x7F) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *
put_varint(char *w, uint64_t v)
{
    while (v > 0x7F) {
        *w++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *w++ = (char)v;
    return w;
}

/* The bytes item `index` of row tuple `row`, or item `sub` of the tuple at `index`
 * (sub >= 0); NULL with TypeError if it is not there or not bytes (borrowed). */
static PyObject *
row_part(PyObject *row, Py_ssize_t index, Py_ssize_t sub)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) <= index) {
        PyErr_SetString(PyExc_TypeError, "a row is a tuple of its decoded parts");
        return NULL;
    }
    PyObject *part = PyTuple_GET_ITEM(row, index);
    if (sub >= 0) {
        if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) <= sub) {
            PyErr_SetString(PyExc_TypeError, "a row's column tuple is too short");
            return NULL;
        }
        part = PyTuple_GET_ITEM(part, sub);
    }
    if (!PyBytes_Check(part)) {
        PyErr_SetString(PyExc_TypeError, "a row's part is not bytes");
        return NULL;
    }
    return part;
}

/* Sum of the sizes of part (index, sub) over rows; -1 on error. */
static Py_ssize_t
column_size(PyObject *rows, Py_ssize_t index, Py_ssize_t sub)
{
    Py_ssize_t total = 0, n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = row_part(PyList_GET_ITEM(rows, i), index, sub);
        if (part == NULL)
            return -1;
        total += PyBytes_GET_SIZE(part);
    }
    return total;
}

static char *
put_column(char *w, PyObject *rows, Py_ssize_t index, Py_ssize_t sub)
{
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++)
        w = put_bytes(w, row_part(PyList_GET_ITEM(rows, i), index, sub));
    return w;
}

/* Packed varints of a list of ints (int64 as two's complement); -1 on error. */
static Py_ssize_t
packed_size(PyObject *values)
{
    Py_ssize_t total = 0, n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = PyLong_AsLongLong(PyList_GET_ITEM(values, i));
        if (v == -1 && PyErr_Occurred())
            return -1;
        total += varint_size((uint64_t)v);
    }
    return total;
}

static char *
put_packed(char *w, PyObject *values)
{
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < n; i++)
        w = put_varint(w, (uint64_t)PyLong_AsLongLong(PyList_GET_ITEM(values, i)));
    return w;
}

/* view_block(head, string_heads, vector_heads, rows, statuses, ages, parts) -> bytes
 * One livefeat.v1.ViewBlock (service/grpc/wire.py WireEncoder.block): `head` (view name,
 * numeric names), field 3 the rows' numeric parts joined, per string column a field 4
 * of its head and the rows' entries, per vector column a field 5 of its head and a
 * field 3 of the rows' vectors, then status (6) and age_ms (7) packed, left out when
 * empty. `parts` = (numeric index, vectors index, strings index) in a row tuple. */
static PyObject *
view_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("view_block", nargs, 7) < 0)
        return NULL;
    PyObject *head = args[0], *sheads = args[1], *vheads = args[2], *rows = args[3];
    PyObject *statuses = args[4], *ages = args[5];
    Py_ssize_t numeric_at, vectors_at, strings_at;
    if (!need(head, PyBytes_Check(head), "bytes") || !need(sheads, PyList_Check(sheads), "a list")
        || !need(vheads, PyList_Check(vheads), "a list") || !need(rows, PyList_Check(rows), "a list")
        || !need(statuses, PyList_Check(statuses), "a list")
        || !need(ages, PyList_Check(ages), "a list")
        || !PyArg_ParseTuple(args[6], "nnn", &numeric_at, &vectors_at, &strings_at))
        return NULL;
    Py_ssize_t ns = PyList_GET_SIZE(sheads), nv = PyList_GET_SIZE(vheads);
    for (Py_ssize_t k = 0; k < ns; k++)
        if (!need(PyList_GET_ITEM(sheads, k), PyBytes_Check(PyList_GET_ITEM(sheads, k)), "bytes"))
            return NULL;
    for (Py_ssize_t k = 0; k < nv; k++)
        if (!need(PyList_GET_ITEM(vheads, k), PyBytes_Check(PyList_GET_ITEM(vheads, k)), "bytes"))
            return NULL;
    /* Sizes first: every part is checked here, the copy below cannot fail. */
    Py_ssize_t numeric = column_size(rows, numeric_at, -1);
    if (numeric < 0)
        return NULL;
    Py_ssize_t total = PyBytes_GET_SIZE(head) + 1 + varint_size(numeric) + numeric;
    Py_ssize_t *inner = PyMem_Malloc(sizeof(Py_ssize_t) * (2 * (ns + nv) + 1));
    if (inner == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < ns; k++) {
        Py_ssize_t column = column_size(rows, strings_at, k);
        if (column < 0)
            goto fail;
        inner[k] = PyBytes_GET_SIZE(PyList_GET_ITEM(sheads, k)) + column;
        total += 1 + varint_size(inner[k]) + inner[k];
    }
    for (Py_ssize_t k = 0; k < nv; k++) {
        Py_ssize_t column = column_size(rows, vectors_at, k);
        if (column < 0)
            goto fail;
        inner[ns + nv + k] = column;
        inner[ns + k] = PyBytes_GET_SIZE(PyList_GET_ITEM(vheads, k)) + 1 + varint_size(column)
                        + column;
        total += 1 + varint_size(inner[ns + k]) + inner[ns + k];
    }
    Py_ssize_t status_size = packed_size(statuses), age_size = packed_size(ages);
    if (status_size < 0 || age_size < 0)
        goto fail;
    if (PyList_GET_SIZE(statuses))
        total += 1 + varint_size(status_size) + status_size;
    if (PyList_GET_SIZE(ages))
        total += 1 + varint_size(age_size) + age_size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto fail;
    char *w = PyBytes_AS_STRING(out);
    w = put_bytes(w, head);
    *w++ = 0x1a; /* field 3, length-delimited */
    w = put_varint(w, numeric);
    w = put_column(w, rows, numeric_at, -1);
    for (Py_ssize_t k = 0; k < ns; k++) {
        *w++ = 0x22; /* field 4 */
        w = put_varint(w, inner[k]);
        w = put_bytes(w, PyList_GET_ITEM(sheads, k));
        w = put_column(w, rows, strings_at, k);
    }
    for (Py_ssize_t k = 0; k < nv; k++) {
        *w++ = 0x2a; /* field 5 */
        w = put_varint(w, inner[ns + k]);
        w = put_bytes(w, PyList_GET_ITEM(vheads, k));
        *w++ = 0x1a; /* its field 3 */
        w = put_varint(w, inner[ns + nv + k]);
        w = put_column(w, rows, vectors_at, k);
    }
    if (PyList_GET_SIZE(statuses)) {
        *w++ = 0x32; /* field 6, packed */
        w = put_varint(w, status_size);
        w = put_packed(w, statuses);
    }
    if (PyList_GET_SIZE(ages)) {
        *w++ = 0x3a; /* field 7, packed */
        w = put_varint(w, age_size);
        w = put_packed(w, ages);
    }
    PyMem_Free(inner);
    if (w != PyBytes_AS_STRING(out) + total) { /* cannot happen: sizes were added up above */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "view_block: size mismatch");
        return NULL;
    }
    return out;
fail:
    PyMem_Free(inner);
    return NULL;
}

static PyMethodDef methods[] = {
    {"keys", (PyCFunction)(void (*)(void))keys, METH_FASTCALL,
     "keys(prefix, ids, suffix): prefix + decimal id + suffix, per id."},
    {"maybe_stored", (PyCFunction)(void (*)(void))maybe_stored, METH_FASTCALL,
     "maybe_stored(bits, nbits, keys): indexes of the keys the Bloom filter may hold."},
    {"l1_get", (PyCFunction)(void (*)(void))l1_get, METH_FASTCALL,
     "l1_get(get, keys, now, miss): L1's value per key, or miss."},
    {"resolve", (PyCFunction)(void (*)(void))resolve, METH_FASTCALL,
     "resolve(got, now_ms, max_age_ms, default_row, unavailable, statuses)."},
    {"join_json", (PyCFunction)join_json, METH_O,
     "join_json(parts): bytes parts and entity sections joined into one buffer."},
    {"view_block", (PyCFunction)(void (*)(void))view_block, METH_FASTCALL,
     "view_block(head, string_heads, vector_heads, rows, statuses, ages, parts)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "service._native", "The compiled per-row loops of a bundle read.",
    0, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModule_Create(&module);
}
