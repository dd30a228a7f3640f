/* The per-row loops of a bundle read, compiled (docs/design.md, "The compiled hot path").
 *
 * Each function here is the C form of a Python function that stays in the code base
 * and is used when this module is not built (service/native.py picks one or the
 * other). The tests give both the same inputs and compare the outputs byte for byte
 * (tests/core/test_native.py). Nothing here releases the GIL, and apart from L1's
 * Table nothing holds state: each call is a loop over one request's keys or rows,
 * doing what the Python loop does without an interpreter step per element.
 *
 *   keys(prefix, ids, suffix)            prefix + decimal id + suffix, per id
 *   maybe_stored(bits, nbits, keys)      the Bloom filter's lookup (store/presence.py)
 *   Table(max_rows)                      L1's entries: a bounded table with CLOCK
 *                                        eviction and batched, prefetched look-ups
 *                                        (_table.h)
 *   misses(values, miss)                 the indexes L1 did not answer (store/readthrough.py)
 *   unrendered(rows)                     the rows decoded without their JSON (the same)
 *   group(keys, values, decoder_of)      a tier's answer: the keys it did not have, the
 *                                        others grouped by decoder (the same)
 *   pick(keys, values, at), put_back(out, at, keys, found)
 *                                        a read's misses as a dict, and what the tiers
 *                                        found put in their places (the same)
 *   take(found, fill, keys, rows, raws)  a tier's decoded rows, taken (the same)
 *   claim(flights, wanted, flight), release(flights, keys, flight)
 *                                        single flight's bookkeeping (store/coalesce.py)
 *   resp_command(args)                   a Redis command in RESP (store/resp.py)
 *   resolve(got, now_ms, max_age_ms, default_row, unavailable, statuses)
 *                                        a view's statuses and ages (core/service.py)
 *   join_json(parts)                     an HTTP answer: bytes and views' entities
 *                                        joined in one buffer (http/encode.py)
 *   view_block(head, string_heads, vector_heads, rows, statuses, ages, parts)
 *                                        a gRPC ViewBlock message (grpc/wire.py)
 *   unwritten(written, items)            the fills the local tier has not been given
 *                                        yet (store/writebehind.py)
 *   layout(spec), decode_rows(layout, values, json=True)
 *                                        ViewCodec.decode_row per value (core/codec.py),
 *                                        with shortest floats as orjson writes them
 *                                        (_shortest.h); json_numbers, for its tests
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "_shortest.h"

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

/* Append `item`, a new reference (NULL: its making failed), to the list `out`, and
 * release it; -1 on error. */
static int
append_new(PyObject *out, PyObject *item)
{
    if (item == NULL)
        return -1;
    int failed = PyList_Append(out, item);
    Py_DECREF(item);
    return failed;
}

#include "_table.h"

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

#define PROBE_BATCH 16

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
    /* In batches: every position of a batch's keys first, their bytes prefetched, then
     * the tests. The bit array (2.4 MB at the default capacity) is mostly out of cache,
     * and one key after the other waited for up to three reads from memory in turn. */
    uint64_t pos[PROBE_BATCH][3];
    for (Py_ssize_t start = 0; start < n; start += PROBE_BATCH) {
        Py_ssize_t end = start + PROBE_BATCH < n ? start + PROBE_BATCH : n;
        for (Py_ssize_t i = start; i < end; i++) {
            Py_hash_t h = PyObject_Hash(PyList_GET_ITEM(keys, i));
            if (h == -1 && PyErr_Occurred())
                goto fail;
            uint64_t u = (uint64_t)(int64_t)h;
            uint64_t h1 = u & 0xFFFFFFFFu, h2 = (u >> 32) | 1u;
            for (uint64_t j = 0; j < 3; j++) {
                uint64_t at = (h1 + j * h2) % nbits;
                pos[i - start][j] = at;
                __builtin_prefetch(bits + (at >> 3));
            }
        }
        for (Py_ssize_t i = start; i < end; i++) {
            const uint64_t *at = pos[i - start];
            int all = 1;
            for (int j = 0; j < 3 && all; j++)
                all = (bits[at[j] >> 3] >> (at[j] & 7)) & 1;
            if (all && append_new(out, PyLong_FromSsize_t(i)) < 0)
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

/* misses(values: list, miss) -> list[int]: the indexes of the items that are `miss`
 * (ReadThrough.get_many: the keys L1 did not answer). */
static PyObject *
misses(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("misses", nargs, 2) < 0)
        return NULL;
    PyObject *values = args[0], *miss = args[1];
    if (!need(values, PyList_Check(values), "a list"))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        if (PyList_GET_ITEM(values, i) != miss)
            continue;
        if (append_new(out, PyLong_FromSsize_t(i)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* unrendered(rows: list) -> list[int]: the indexes of the rows (tuples) whose JSON slot,
 * item 1, is not bytes: rows ViewCodec.bare decoded, which a reader that serves JSON
 * renders first (ReadThrough.read). Other items (None, UNAVAILABLE) are not rows. */
static PyObject *
unrendered(PyObject *self, PyObject *rows)
{
    if (!need(rows, PyList_Check(rows), "a list"))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) < 2
            || PyBytes_CheckExact(PyTuple_GET_ITEM(row, 1)))
            continue;
        if (append_new(out, PyLong_FromSsize_t(i)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* group(keys: list[bytes], values: list, decoder_of: dict)
 *   -> (still: list[bytes], groups: dict[decoder, (list[bytes], list)])
 * A tier's answer (ReadThrough._take): the keys whose value is None, in order, and the
 * others grouped by decoder_of[key], in the order first seen. */
static PyObject *
group(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("group", nargs, 3) < 0)
        return NULL;
    PyObject *keys = args[0], *values = args[1], *decoder_of = args[2];
    if (!need(keys, PyList_Check(keys), "a list") || !need(values, PyList_Check(values), "a list")
        || !need(decoder_of, PyDict_Check(decoder_of), "a dict"))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "group: keys and values differ in length");
        return NULL;
    }
    PyObject *still = PyList_New(0), *groups = PyDict_New();
    if (still == NULL || groups == NULL)
        goto fail;
    PyObject *last_decoder = NULL, *last_group = NULL; /* borrowed: runs of one view */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i), *value = PyList_GET_ITEM(values, i);
        if (value == Py_None) {
            if (PyList_Append(still, key) < 0)
                goto fail;
            continue;
        }
        PyObject *decoder = PyDict_GetItemWithError(decoder_of, key); /* borrowed */
        if (decoder == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            goto fail;
        }
        PyObject *entry = decoder == last_decoder ? last_group : NULL;
        if (entry == NULL) {
            entry = PyDict_GetItemWithError(groups, decoder);
            if (entry == NULL) {
                if (PyErr_Occurred())
                    goto fail;
                PyObject *group_keys = PyList_New(0), *group_values = PyList_New(0);
                entry = group_keys && group_values ? PyTuple_Pack(2, group_keys, group_values)
                                                   : NULL;
                Py_XDECREF(group_keys);
                Py_XDECREF(group_values);
                if (entry == NULL)
                    goto fail;
                int bad = PyDict_SetItem(groups, decoder, entry);
                Py_DECREF(entry); /* the dict holds it */
                if (bad < 0)
                    goto fail;
            }
            last_decoder = decoder;
            last_group = entry;
        }
        if (PyList_Append(PyTuple_GET_ITEM(entry, 0), key) < 0
            || PyList_Append(PyTuple_GET_ITEM(entry, 1), value) < 0)
            goto fail;
    }
    return Py_BuildValue("(NN)", still, groups);
fail:
    Py_XDECREF(still);
    Py_XDECREF(groups);
    return NULL;
}

/* The index `at[j]` (an int) checked against a list of n items; -1 with IndexError. */
static Py_ssize_t
index_in(PyObject *at, Py_ssize_t j, Py_ssize_t n)
{
    Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(at, j));
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return -1;
    }
    return i;
}

/* pick(keys: list, values: list, at: list[int]) -> dict: {keys[i]: values[i] for i in
 * at} (ReadThrough.get_many: the keys L1 missed, with their decoders). */
static PyObject *
pick(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("pick", nargs, 3) < 0)
        return NULL;
    PyObject *keys = args[0], *values = args[1], *at = args[2];
    if (!need(keys, PyList_Check(keys), "a list") || !need(values, PyList_Check(values), "a list")
        || !need(at, PyList_Check(at), "a list"))
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(at); j++) {
        Py_ssize_t n = PyList_GET_SIZE(keys), m = PyList_GET_SIZE(values);
        Py_ssize_t i = index_in(at, j, n < m ? n : m);
        if (i < 0)
            goto fail;
        if (PyDict_SetItem(out, PyList_GET_ITEM(keys, i), PyList_GET_ITEM(values, i)) < 0)
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* put_back(out: list, at: list[int], keys: list, found: dict) -> None: out[i] =
 * found[keys[i]] for i in at, KeyError for a key found lacks (ReadThrough.get_many:
 * what the tiers found, put where L1 missed). */
static PyObject *
put_back(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("put_back", nargs, 4) < 0)
        return NULL;
    PyObject *out = args[0], *at = args[1], *keys = args[2], *found = args[3];
    if (!need(out, PyList_Check(out), "a list") || !need(at, PyList_Check(at), "a list")
        || !need(keys, PyList_Check(keys), "a list") || !need(found, PyDict_Check(found), "a dict"))
        return NULL;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(at); j++) {
        Py_ssize_t n = PyList_GET_SIZE(keys), m = PyList_GET_SIZE(out);
        Py_ssize_t i = index_in(at, j, n < m ? n : m);
        if (i < 0)
            return NULL;
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *value = PyDict_GetItemWithError(found, key); /* borrowed */
        if (value == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        Py_INCREF(value);
        if (PyList_SetItem(out, i, value) < 0) /* steals value, releases the old item */
            return NULL;
    }
    Py_RETURN_NONE;
}

/* take(found: dict, fill: list, keys: list, rows: list, raws: list) -> bool: where every
 * row is a tuple (a decoded row, not a CorruptValue), found[key] = row and (key, raw)
 * appended to fill for each, in order, and True; else False, and nothing changed
 * (ReadThrough._take: what a tier returned, decoded). */
static PyObject *
take(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("take", nargs, 5) < 0)
        return NULL;
    PyObject *found = args[0], *fill = args[1], *keys = args[2], *rows = args[3], *raws = args[4];
    if (!need(found, PyDict_Check(found), "a dict") || !need(fill, PyList_Check(fill), "a list")
        || !need(keys, PyList_Check(keys), "a list") || !need(rows, PyList_Check(rows), "a list")
        || !need(raws, PyList_Check(raws), "a list"))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(rows) != n || PyList_GET_SIZE(raws) != n) {
        PyErr_SetString(PyExc_ValueError, "take: keys, rows and raws differ in length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyTuple_CheckExact(PyList_GET_ITEM(rows, i)))
            Py_RETURN_FALSE;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (PyDict_SetItem(found, key, PyList_GET_ITEM(rows, i)) < 0
            || append_new(fill, PyTuple_Pack(2, key, PyList_GET_ITEM(raws, i))) < 0)
            return NULL;
    }
    Py_RETURN_TRUE;
}

/* claim(flights: dict, wanted: dict, flight) -> (mine, others): `others` maps each key
 * of `wanted` that `flights` holds to its flight there; `mine` holds the rest with
 * their values (`wanted` itself when that is all of it), each of which `flights` now
 * maps to `flight` (coalesce.py: the fetches under way, and a new one). */
static PyObject *
claim(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("claim", nargs, 3) < 0)
        return NULL;
    PyObject *flights = args[0], *wanted = args[1], *flight = args[2];
    if (!need(flights, PyDict_Check(flights), "a dict")
        || !need(wanted, PyDict_Check(wanted), "a dict"))
        return NULL;
    PyObject *others = PyDict_New(), *mine = NULL, *key, *value;
    if (others == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    if (PyDict_GET_SIZE(flights)) {
        while (PyDict_Next(wanted, &pos, &key, &value)) {
            PyObject *f = PyDict_GetItemWithError(flights, key); /* borrowed */
            if (f == NULL && PyErr_Occurred())
                goto fail;
            if (f != NULL && PyDict_SetItem(others, key, f) < 0)
                goto fail;
        }
    }
    if (PyDict_GET_SIZE(others) == 0) {
        mine = Py_NewRef(wanted);
    }
    else {
        mine = PyDict_New();
        if (mine == NULL)
            goto fail;
        for (pos = 0; PyDict_Next(wanted, &pos, &key, &value);) {
            int in = PyDict_Contains(others, key);
            if (in < 0 || (!in && PyDict_SetItem(mine, key, value) < 0))
                goto fail;
        }
    }
    for (pos = 0; PyDict_Next(mine, &pos, &key, &value);) {
        if (PyDict_SetItem(flights, key, flight) < 0)
            goto fail;
    }
    PyObject *both = PyTuple_Pack(2, mine, others);
    Py_DECREF(mine);
    Py_DECREF(others);
    return both;
fail:
    Py_XDECREF(mine);
    Py_DECREF(others);
    return NULL;
}

/* release(flights: dict, keys: dict, flight) -> None: delete from `flights` each of
 * `keys` it maps to `flight` itself (coalesce.py: a fetch that ended). */
static PyObject *
release(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("release", nargs, 3) < 0)
        return NULL;
    PyObject *flights = args[0], *keys = args[1], *flight = args[2], *key, *value;
    if (!need(flights, PyDict_Check(flights), "a dict") || !need(keys, PyDict_Check(keys), "a dict"))
        return NULL;
    for (Py_ssize_t pos = 0; PyDict_Next(keys, &pos, &key, &value);) {
        PyObject *f = PyDict_GetItemWithError(flights, key); /* borrowed */
        if (f == NULL && PyErr_Occurred())
            return NULL;
        if (f == flight && PyDict_DelItem(flights, key) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* resp_command(args: tuple | list of bytes) -> bytes: the command in RESP, an array of
 * bulk strings (RespReader: one MGET per read below L1). hiredis.pack_command took
 * 8.6 us for an MGET of 101 keys; this writes it in one pass. */
static PyObject *
resp_command(PyObject *self, PyObject *args)
{
    PyObject *seq = PySequence_Fast(args, "resp_command: expected a tuple or list of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t total = 1 + 20 + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!need(items[i], PyBytes_Check(items[i]), "bytes")) {
            Py_DECREF(seq);
            return NULL;
        }
        total += 1 + 20 + 2 + PyBytes_GET_SIZE(items[i]) + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    char *w = PyBytes_AS_STRING(out), digits[24];
    char *d = format_u64((uint64_t)n, digits + sizeof digits);
    *w++ = '*';
    memcpy(w, d, (size_t)(digits + sizeof digits - d));
    w += digits + sizeof digits - d;
    memcpy(w, "\r\n", 2);
    w += 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t size = PyBytes_GET_SIZE(items[i]);
        d = format_u64((uint64_t)size, digits + sizeof digits);
        *w++ = '$';
        memcpy(w, d, (size_t)(digits + sizeof digits - d));
        w += digits + sizeof digits - d;
        memcpy(w, "\r\n", 2);
        memcpy(w + 2, PyBytes_AS_STRING(items[i]), (size_t)size);
        memcpy(w + 2 + size, "\r\n", 2);
        w += 2 + size + 2;
    }
    Py_DECREF(seq);
    if (_PyBytes_Resize(&out, w - PyBytes_AS_STRING(out)) < 0)
        return NULL;
    return out;
}

/* Prefetch, for the rows read next, the objects row_part(row, index, sub) reads: the
 * row tuple 16 rows ahead, its item `index` 8 ahead, that item's item `sub` 4 ahead
 * (each once the one before it has had time to arrive). A view's rows lie anywhere in
 * L1's memory; read one by one, each of the three was a wait on memory (resolve: 33 us
 * for 500 rows spread over 20,000, 12.7 with this; docs/design.md, "The L1 table"). */
static inline void
prefetch_part(PyObject *rows, Py_ssize_t i, Py_ssize_t n, Py_ssize_t index, Py_ssize_t sub)
{
    if (i + 16 < n)
        __builtin_prefetch(PyList_GET_ITEM(rows, i + 16));
    if (i + 8 < n) {
        PyObject *row = PyList_GET_ITEM(rows, i + 8);
        if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) > index)
            __builtin_prefetch(PyTuple_GET_ITEM(row, index));
    }
    if (sub >= 0 && i + 4 < n) {
        PyObject *row = PyList_GET_ITEM(rows, i + 4);
        if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) > index) {
            PyObject *part = PyTuple_GET_ITEM(row, index);
            if (PyTuple_CheckExact(part) && PyTuple_GET_SIZE(part) > sub)
                __builtin_prefetch(PyTuple_GET_ITEM(part, sub));
        }
    }
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
        prefetch_part(got, i, n, 0, -1); /* the event times */
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
            /* An event time in ms has 41 bits: PyLong_AsLongLong takes such an int
             * through _PyLong_AsByteArray, a byte-by-byte loop; this, a digit loop. */
            int overflow;
            long long event_time = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(r, 0), &overflow);
            if (overflow) {
                PyErr_SetString(PyExc_OverflowError, "an event time out of int64's range");
                goto fail;
            }
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
        prefetch_part(rows, i, n, json_index, -1); /* the JSON fragments */
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
        if (i + 2 < n) { /* a later row's fragment, while this one is copied */
            PyObject *next = PyTuple_GET_ITEM(PyList_GET_ITEM(rows, i + 2), json_index);
            const char *from = PyBytes_AS_STRING(next);
            Py_ssize_t len = PyBytes_GET_SIZE(next) < 1024 ? PyBytes_GET_SIZE(next) : 1024;
            for (Py_ssize_t at = 0; at < len; at += 64)
                __builtin_prefetch(from + at);
        }
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
        prefetch_part(rows, i, n, index, sub);
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

/* ---------------------------------------------------------------------------------
 * decode_rows(layout, values, json=True) -> list[row | None]
 *
 * ViewCodec.decode_row of each stored value (service/core/codec.py: the layout, the
 * Row tuple, and the Python definition this must match byte for byte), or None where
 * this does not decode it and the codec's Python does: a value that is not bytes, is
 * too short, has another layout version, holds text that is not UTF-8, is cut short,
 * or carries anything after its strings but a well-formed served section (whose
 * values are filled in as they are, as the Python does). The codec then decodes or
 * refuses it as before, with its own error messages.
 *
 * With `json` false (ViewCodec.bare, for readers that serve no JSON), the row's JSON
 * slot holds the 1-tuple (value,) instead of the rendered fragment; the rest is the same.
 *
 * `layout` is what layout(spec) made of the view's spec, parsed once:
 * spec = (version16, fixed_size, scalar_codes, vector_dims, n_strings, order):
 *   scalar_codes: bytes, the struct codes (q d f ?) of the scalars in stored order;
 *   vector_dims:  tuple of int, each float vector's dim in stored order;
 *   order:        tuple of (name_json, group, index) per feature in registry order:
 *                 name_json is the JSON of "view.feature" followed by ':', group
 *                 0 scalar, 1 vector, 2 string, index its place in the group.
 */

typedef struct {
    uint64_t version16;
    Py_ssize_t fixed_size, n_scalars, n_vectors, n_strings, n_order;
    const char *codes;        /* n_scalars struct codes */
    Py_ssize_t *scalar_at;    /* byte offset of each scalar */
    Py_ssize_t *vector_at;    /* byte offset of each vector */
    Py_ssize_t *vector_dim;
    PyObject **names;         /* borrowed: name_json per feature, registry order */
    int *group;
    Py_ssize_t *index;
    Py_ssize_t json_bound;    /* most JSON bytes a row's names, numbers and vectors take */
    PyObject *spec;           /* the tuple parsed, which owns `codes` and `names` */
} Layout;

#define LAYOUT_NAME "livefeat._native.layout"

static void
layout_free(Layout *l)
{
    PyMem_Free(l->scalar_at);
    PyMem_Free(l->vector_at);
    PyMem_Free(l->vector_dim);
    PyMem_Free(l->names);
    PyMem_Free(l->group);
    PyMem_Free(l->index);
}

static int
layout_bad(const char *why)
{
    PyErr_Format(PyExc_ValueError, "layout: bad layout spec (%s)", why);
    return -1;
}

static int
layout_parse(PyObject *spec, Layout *l)
{
    memset(l, 0, sizeof *l);
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 6)
        return layout_bad("a tuple of 6");
    PyObject *codes = PyTuple_GET_ITEM(spec, 2), *dims = PyTuple_GET_ITEM(spec, 3);
    PyObject *order = PyTuple_GET_ITEM(spec, 5);
    if (!PyBytes_Check(codes) || !PyTuple_Check(dims) || !PyTuple_Check(order))
        return layout_bad("codes bytes, dims and order tuples");
    l->version16 = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(spec, 0));
    l->fixed_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
    l->n_strings = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 4));
    if (PyErr_Occurred())
        return -1;
    l->n_scalars = PyBytes_GET_SIZE(codes);
    l->codes = PyBytes_AS_STRING(codes);
    l->n_vectors = PyTuple_GET_SIZE(dims);
    l->n_order = PyTuple_GET_SIZE(order);
    l->scalar_at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(l->n_scalars + 1));
    l->vector_at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(l->n_vectors + 1));
    l->vector_dim = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(l->n_vectors + 1));
    l->names = PyMem_Malloc(sizeof(PyObject *) * (size_t)(l->n_order + 1));
    l->group = PyMem_Malloc(sizeof(int) * (size_t)(l->n_order + 1));
    l->index = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(l->n_order + 1));
    if (!l->scalar_at || !l->vector_at || !l->vector_dim || !l->names || !l->group || !l->index) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 8; /* after the header */
    for (Py_ssize_t k = 0; k < l->n_scalars; k++) {
        l->scalar_at[k] = at;
        switch (l->codes[k]) {
        case 'q': case 'd': at += 8; break;
        case 'f': at += 4; break;
        case '?': at += 1; break;
        default: return layout_bad("a scalar code not in q, d, f, ?");
        }
    }
    for (Py_ssize_t k = 0; k < l->n_vectors; k++) {
        Py_ssize_t dim = PyLong_AsSsize_t(PyTuple_GET_ITEM(dims, k));
        if (dim < 0)
            return PyErr_Occurred() ? -1 : layout_bad("a negative dim");
        l->vector_at[k] = at;
        l->vector_dim[k] = dim;
        at += 4 * dim;
    }
    if (at != l->fixed_size)
        return layout_bad("fixed_size is not the size of the scalars and vectors");
    Py_ssize_t bound = 0;
    for (Py_ssize_t k = 0; k < l->n_order; k++) {
        PyObject *item = PyTuple_GET_ITEM(order, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 0)))
            return layout_bad("order items (name_json, group, index)");
        l->names[k] = PyTuple_GET_ITEM(item, 0);
        long group = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 2));
        if (PyErr_Occurred())
            return -1;
        Py_ssize_t size = group == 0 ? l->n_scalars : group == 1 ? l->n_vectors
                        : group == 2 ? l->n_strings : -1;
        if (index < 0 || index >= size)
            return layout_bad("an order item's group or index");
        l->group[k] = (int)group;
        l->index[k] = index;
        bound += PyBytes_GET_SIZE(l->names[k]) + 1; /* and a comma */
        bound += group == 0 ? NUMBER_MAX : group == 1 ? 2 + (NUMBER_MAX + 1) * l->vector_dim[index] : 2;
    }
    l->json_bound = bound;
    return 0;
}

/* Whether s[0:n] is UTF-8 as Python's strict decoder accepts it: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
static int
utf8_valid(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t more;
        unsigned char lo = 0x80, hi = 0xBF; /* the range of the byte after c */
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        }
        else
            return 0;
        if (n - i - 1 < more || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (Py_ssize_t k = 2; k <= more; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += more + 1;
    }
    return 1;
}

/* s[0:n] (valid UTF-8) as a JSON string, escaped as orjson escapes: \" \\ \b \t \n \f
 * \r and \u00XX for the other control characters; everything else as it is. */
static char *
write_string(char *w, const unsigned char *s, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    *w++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\t': *w++ = 't'; break;
        case '\n': *w++ = 'n'; break;
        case '\f': *w++ = 'f'; break;
        case '\r': *w++ = 'r'; break;
        default:
            memcpy(w, "u00", 3);
            w[3] = hex[c >> 4];
            w[4] = hex[c & 15];
            w += 5;
        }
    }
    *w++ = '"';
    return w;
}

/* Little-endian loads. One memcpy where the machine is little-endian: gcc -O2 left the
 * byte loop a loop, 2,500 instructions of a standard room row's 17,000. */
static inline uint64_t
load_u64(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
#endif
}

static inline uint32_t
load_u32(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static inline double
load_double(const unsigned char *p)
{
    uint64_t bits = load_u64(p);
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static inline float
load_float(const unsigned char *p)
{
    uint32_t bits = load_u32(p);
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* x, a signalling NaN made quiet (payload kept), as a round trip through a double
 * makes it: struct's 'f' unpacks to a Python float and packs it again (decode_row).
 * Written out because a compiler may drop (float)(double)x as an identity. */
static float
quiet_float(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu))
        bits |= 0x00400000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* A float32 vector as orjson writes a numpy float32 array: [a,b,...]. */
static char *
write_vector(char *w, const unsigned char *p, Py_ssize_t dim)
{
    *w++ = '[';
    for (Py_ssize_t k = 0; k < dim; k++) {
        if (k)
            *w++ = ',';
        w = write_float(w, load_float(p + 4 * k));
    }
    *w++ = ']';
    return w;
}

/* A scalar's float32 in the numeric row, as decode_row packs it (struct's 'f' rounds
 * the double; beyond float32's range, inf, as numpy's cast gives it). */
static float
numeric_of(char code, const unsigned char *p)
{
    switch (code) {
    case 'q': return (float)(double)(int64_t)load_u64(p);
    case 'd': return (float)load_double(p);
    case 'f': return quiet_float(load_float(p));
    default: return p[0] ? 1.0f : 0.0f; /* '?' */
    }
}

/* A scalar's JSON value, as orjson writes the value struct unpacks. */
static char *
write_scalar(char *w, char code, const unsigned char *p)
{
    switch (code) {
    case 'q': {
        int64_t v = (int64_t)load_u64(p);
        uint64_t magnitude = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
        if (magnitude < 10000000000000000ull) { /* 16 digits at most: no digit loop */
            *w = '-';
            w += v < 0;
            return put_digits(w, magnitude, magnitude ? decimal_length(magnitude) : 1);
        }
        char digits[24];
        char *d = format_u64(magnitude, digits + sizeof digits);
        if (v < 0)
            *w++ = '-';
        memcpy(w, d, (size_t)(digits + sizeof digits - d));
        return w + (digits + sizeof digits - d);
    }
    case 'd': return write_double(w, load_double(p));
    case 'f': return write_float(w, load_float(p));
    default: /* '?' */
        memcpy(w, p[0] ? "true" : "false", p[0] ? 4 : 5);
        return w + (p[0] ? 4 : 5);
    }
}

/* A mask of the bytes below 0x20 in the little-endian word x: bit 7 of each such byte.
 * Exact per byte (no carry crosses bytes: (b & 0x7F) + 0x60 <= 0xDF): a served
 * section's separators are such bytes, and its JSON holds none (orjson escapes control
 * characters), so a word of eight bytes is tested at once. A byte by byte scan took
 * 0.5 us of a standard room row's section (640 bytes), this 0.15. */
static inline uint64_t
control_bytes(uint64_t x)
{
    return ~(((x & 0x7F7F7F7F7F7F7F7Full) + 0x6060606060606060ull) | x) & 0x8080808080808080ull;
}

/* One row, or Py_None (new reference) where the codec's Python must decode it. */
static PyObject *
decode_one(const Layout *l, PyObject *value, int with_json, char **scratch,
           Py_ssize_t *scratch_size, Py_ssize_t *text_at, Py_ssize_t *text_len,
           Py_ssize_t *part_at, Py_ssize_t *part_len)
{
    if (!PyBytes_Check(value))
        Py_RETURN_NONE;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size < l->fixed_size)
        Py_RETURN_NONE;
    uint64_t head = load_u64(buf);
    if (head >> 48 != l->version16)
        Py_RETURN_NONE;
    /* The strings first: where each is, and whether all is well. */
    Py_ssize_t pos = l->fixed_size, json_size = l->json_bound;
    for (Py_ssize_t k = 0; k < l->n_strings; k++) {
        if (size - pos < 2)
            Py_RETURN_NONE;
        Py_ssize_t n = (Py_ssize_t)buf[pos] | (Py_ssize_t)buf[pos + 1] << 8;
        if (size - pos - 2 < n || !utf8_valid(buf + pos + 2, n))
            Py_RETURN_NONE;
        text_at[k] = pos + 2;
        text_len[k] = n;
        json_size += 6 * n;
        pos += 2 + n;
    }
    int section = pos != size;
    if (section) {
        /* A served section (service/core/codec.py): 0x1E, each feature's JSON value in
         * registry order separated by 0x1F, 0x1E. Its values are filled in as they are,
         * as the Python does; anything else after the strings is left to the Python,
         * which refuses it. */
        if (size - pos < 2 || buf[pos] != 0x1E || buf[size - 1] != 0x1E)
            Py_RETURN_NONE;
        Py_ssize_t k = 0, i = pos + 1, end = size - 1;
        part_at[0] = i;
        while (i < end) { /* eight bytes at a time (load_u64: byte i lowest), then one */
            Py_ssize_t width = end - i >= 8 ? 8 : 1;
            uint64_t mask = width == 8 ? control_bytes(load_u64(buf + i))
                                       : (buf[i] < 0x20 ? 0x80 : 0);
            for (; mask; mask &= mask - 1) { /* each control byte, lowest first */
                Py_ssize_t at = i + (__builtin_ctzll(mask) >> 3);
                if (buf[at] == 0x1E)
                    Py_RETURN_NONE;
                if (buf[at] == 0x1F) {
                    if (k + 1 >= l->n_order)
                        Py_RETURN_NONE;
                    part_len[k] = at - part_at[k];
                    part_at[++k] = at + 1;
                }
            }
            i += width;
        }
        part_len[k] = size - 1 - part_at[k];
        if (k + 1 != l->n_order)
            Py_RETURN_NONE;
        json_size += size - pos;
    }
    if (with_json && json_size > *scratch_size) {
        char *bigger = PyMem_Realloc(*scratch, (size_t)json_size);
        if (bigger == NULL)
            return PyErr_NoMemory();
        *scratch = bigger;
        *scratch_size = json_size;
    }
    PyObject *numeric = PyBytes_FromStringAndSize(NULL, 4 * l->n_scalars);
    PyObject *vectors = PyTuple_New(l->n_vectors);
    PyObject *entries = PyTuple_New(l->n_strings);
    PyObject *time = PyLong_FromUnsignedLongLong(head & 0xFFFFFFFFFFFFull);
    PyObject *json = NULL;
    if (!numeric || !vectors || !entries || !time)
        goto fail;
    char *w = *scratch;
    float *numbers = (float *)PyBytes_AS_STRING(numeric); /* aligned: a bytes object's data */
    for (Py_ssize_t k = 0; with_json && k < l->n_order; k++) {
        if (k)
            *w++ = ',';
        PyObject *name = l->names[k];
        memcpy(w, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        w += PyBytes_GET_SIZE(name);
        Py_ssize_t i = l->index[k];
        if (section) { /* the value as the section holds it */
            memcpy(w, buf + part_at[k], (size_t)part_len[k]);
            w += part_len[k];
        }
        else if (l->group[k] == 0)
            w = write_scalar(w, l->codes[i], buf + l->scalar_at[i]);
        else if (l->group[k] == 1)
            w = write_vector(w, buf + l->vector_at[i], l->vector_dim[i]);
        else
            w = write_string(w, buf + text_at[i], text_len[i]);
    }
    for (Py_ssize_t k = 0; k < l->n_scalars; k++) { /* the numeric row: the binary part */
        float f = numeric_of(l->codes[k], buf + l->scalar_at[k]);
        memcpy(&numbers[k], &f, sizeof f);
    }
    /* Without the JSON (a front end that does not serve it: ViewCodec.bare), its slot
     * holds the stored value, from which ViewCodec.render renders it if asked. */
    json = with_json ? PyBytes_FromStringAndSize(*scratch, w - *scratch) : PyTuple_Pack(1, value);
    if (json == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < l->n_vectors; k++) {
        PyObject *v = PyBytes_FromStringAndSize((const char *)buf + l->vector_at[k],
                                                4 * l->vector_dim[k]);
        if (v == NULL)
            goto fail;
        PyTuple_SET_ITEM(vectors, k, v);
    }
    for (Py_ssize_t k = 0; k < l->n_strings; k++) { /* protobuf: tag 2, length, UTF-8 */
        Py_ssize_t n = text_len[k];
        PyObject *e = PyBytes_FromStringAndSize(NULL, 1 + varint_size((uint64_t)n) + n);
        if (e == NULL)
            goto fail;
        char *p = PyBytes_AS_STRING(e);
        *p++ = 0x12;
        p = put_varint(p, (uint64_t)n);
        memcpy(p, buf + text_at[k], (size_t)n);
        PyTuple_SET_ITEM(entries, k, e);
    }
    PyObject *row = PyTuple_New(5);
    if (row == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 0, time);
    PyTuple_SET_ITEM(row, 1, json);
    PyTuple_SET_ITEM(row, 2, numeric);
    PyTuple_SET_ITEM(row, 3, vectors);
    PyTuple_SET_ITEM(row, 4, entries);
    return row;
fail:
    Py_XDECREF(numeric);
    Py_XDECREF(vectors);
    Py_XDECREF(entries);
    Py_XDECREF(time);
    Py_XDECREF(json);
    return NULL;
}

static void
layout_release(PyObject *capsule)
{
    Layout *l = PyCapsule_GetPointer(capsule, LAYOUT_NAME);
    if (l == NULL)
        return;
    layout_free(l);
    Py_XDECREF(l->spec);
    PyMem_Free(l);
}

/* layout(spec) -> an opaque layout for decode_rows: the spec parsed once per view. */
static PyObject *
layout(PyObject *self, PyObject *spec)
{
    Layout *l = PyMem_Malloc(sizeof *l);
    if (l == NULL)
        return PyErr_NoMemory();
    if (layout_parse(spec, l) < 0) {
        layout_free(l);
        PyMem_Free(l);
        return NULL;
    }
    Py_INCREF(spec);
    l->spec = spec;
    PyObject *capsule = PyCapsule_New(l, LAYOUT_NAME, layout_release);
    if (capsule == NULL) {
        layout_free(l);
        Py_DECREF(spec);
        PyMem_Free(l);
    }
    return capsule;
}

static PyObject *
decode_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && check_args("decode_rows", nargs, 3) < 0)
        return NULL;
    int with_json = nargs == 2 ? 1 : PyObject_IsTrue(args[2]);
    if (with_json < 0)
        return NULL;
    PyObject *values = args[1];
    if (!need(args[0], PyCapsule_IsValid(args[0], LAYOUT_NAME), "a layout (from layout())")
        || !need(values, PyList_Check(values), "a list"))
        return NULL;
    const Layout *l = PyCapsule_GetPointer(args[0], LAYOUT_NAME);
    /* per string: where its text starts and its length; per feature: the same of its
     * value in a served section. Per call, with the JSON scratch buffer: a call may
     * start another (a finalizer run by the garbage collector), so they are not shared. */
    Py_ssize_t *text = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(2 * l->n_strings + 2 * l->n_order + 2));
    if (text == NULL)
        return PyErr_NoMemory();
    Py_ssize_t *parts = text + 2 * l->n_strings;
    char *scratch = NULL;
    Py_ssize_t scratch_size = 0;
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *row = decode_one(l, PyList_GET_ITEM(values, i), with_json, &scratch,
                                   &scratch_size, text, text + l->n_strings, parts,
                                   parts + l->n_order + 1);
        if (row == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, row);
    }
    PyMem_Free(text);
    PyMem_Free(scratch);
    return out;
}

/* json_numbers(data: bytes, width: 4 or 8) -> bytes: the little-endian floats (4) or
 * doubles (8) in `data` as orjson writes a numpy float32 or float64 array. For the
 * tests, which check the shortest-decimal code against orjson on many values. */
static PyObject *
json_numbers(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("json_numbers", nargs, 2) < 0)
        return NULL;
    if (!need(args[0], PyBytes_Check(args[0]), "bytes"))
        return NULL;
    long width = PyLong_AsLong(args[1]);
    if (width == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if ((width != 4 && width != 8) || size % width) {
        PyErr_SetString(PyExc_ValueError, "width is 4 or 8 and divides the data's length");
        return NULL;
    }
    Py_ssize_t count = size / width;
    char *buf = PyMem_Malloc((size_t)(2 + count * (NUMBER_MAX + 1)));
    if (buf == NULL)
        return PyErr_NoMemory();
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    char *w = buf;
    *w++ = '[';
    for (Py_ssize_t k = 0; k < count; k++) {
        if (k)
            *w++ = ',';
        w = width == 4 ? write_float(w, load_float(p + 4 * k)) : write_double(w, load_double(p + 8 * k));
    }
    *w++ = ']';
    PyObject *out = PyBytes_FromStringAndSize(buf, w - buf);
    PyMem_Free(buf);
    return out;
}


/* The memory of the local tier's fills (store/writebehind.py): a bytearray of a power of
 * two of 16-byte slots {u64 hash of the key (0: empty), u64 header of the value given},
 * open addressing with linear probing, never more than half full (the caller starts
 * again before). One slot holds what a dict held in four objects: a lookup is one
 * random memory read instead of four, and a batch's reads are prefetched together. */

typedef struct {
    uint64_t hash, header;
} MemoSlot;

static int
memo_view(PyObject *memo, MemoSlot **slots, size_t *mask)
{
    if (!PyByteArray_Check(memo)) {
        PyErr_SetString(PyExc_TypeError, "the memo is a bytearray");
        return -1;
    }
    size_t n = (size_t)PyByteArray_GET_SIZE(memo) / sizeof(MemoSlot);
    if (n == 0 || (n & (n - 1)) || n * sizeof(MemoSlot) != (size_t)PyByteArray_GET_SIZE(memo)) {
        PyErr_SetString(PyExc_ValueError, "the memo holds a power of two of 16-byte slots");
        return -1;
    }
    *slots = (MemoSlot *)PyByteArray_AS_STRING(memo);
    *mask = n - 1;
    return 0;
}

/* The arguments (memo, items: list) of unwritten and remember, checked. */
static int
memo_args(const char *name, PyObject *const *args, Py_ssize_t nargs, MemoSlot **slots,
          size_t *mask)
{
    if (check_args(name, nargs, 2) < 0 || memo_view(args[0], slots, mask) < 0)
        return -1;
    return need(args[1], PyList_Check(args[1]), "a list") ? 0 : -1;
}

/* The item's key hash (never 0) and value header; 0 if the value is shorter than a
 * header (never remembered); -1 on error. */
static int
memo_item(PyObject *item, uint64_t *hash, uint64_t *header)
{
    /* bytes keys only: their hash runs no Python code, which could resize the memo */
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
        || !PyBytes_Check(PyTuple_GET_ITEM(item, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
        PyErr_SetString(PyExc_TypeError, "fills are (key: bytes, value: bytes) tuples");
        return -1;
    }
    Py_hash_t h = PyObject_Hash(PyTuple_GET_ITEM(item, 0));
    if (h == -1)
        return -1;
    *hash = (uint64_t)h ? (uint64_t)h : 1;
    PyObject *value = PyTuple_GET_ITEM(item, 1);
    if (PyBytes_GET_SIZE(value) < 8)
        return 0;
    memcpy(header, PyBytes_AS_STRING(value), 8);
    return 1;
}

/* The slot holding `hash`, or the empty slot where it would go; NULL if the memo is
 * full (the caller broke the half-full rule). */
static MemoSlot *
memo_find(MemoSlot *slots, size_t mask, uint64_t hash)
{
    size_t i = (size_t)hash & mask;
    for (size_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
        if (slots[i].hash == hash || slots[i].hash == 0)
            return &slots[i];
    }
    return NULL;
}

#define MEMO_BATCH 64

/* unwritten(memo, items) -> list: the (key, value) items whose value's header the
 * memo does not hold under the key's hash: what the local tier was not given yet. */
static PyObject *
unwritten(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    MemoSlot *slots;
    size_t mask;
    if (memo_args("unwritten", args, nargs, &slots, &mask) < 0)
        return NULL;
    PyObject *items = args[1];
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    uint64_t hashes[MEMO_BATCH], headers[MEMO_BATCH];
    int full[MEMO_BATCH];
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t start = 0; start < n; start += MEMO_BATCH) {
        Py_ssize_t end = start + MEMO_BATCH < n ? start + MEMO_BATCH : n;
        for (Py_ssize_t i = start; i < end; i++) { /* hash, and prefetch the home slot */
            int ok = memo_item(PyList_GET_ITEM(items, i), &hashes[i - start], &headers[i - start]);
            if (ok < 0)
                goto fail;
            full[i - start] = ok;
            __builtin_prefetch(&slots[(size_t)hashes[i - start] & mask]);
        }
        for (Py_ssize_t i = start; i < end; i++) {
            MemoSlot *slot = memo_find(slots, mask, hashes[i - start]);
            int same = full[i - start] && slot != NULL && slot->hash == hashes[i - start]
                       && slot->header == headers[i - start];
            if (!same && PyList_Append(out, PyList_GET_ITEM(items, i)) < 0)
                goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* remember(memo, items) -> int: the memo holds each item's header under its key's hash
 * from now on (values shorter than a header are not remembered); returns how many
 * slots it newly filled. ValueError if the memo is full. */
static PyObject *
remember(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    MemoSlot *slots;
    size_t mask;
    if (memo_args("remember", args, nargs, &slots, &mask) < 0)
        return NULL;
    PyObject *items = args[1];
    Py_ssize_t added = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        uint64_t hash, header;
        int ok = memo_item(PyList_GET_ITEM(items, i), &hash, &header);
        if (ok < 0)
            return NULL;
        if (!ok)
            continue;
        MemoSlot *slot = memo_find(slots, mask, hash);
        if (slot == NULL) {
            PyErr_SetString(PyExc_ValueError, "remember: the memo is full");
            return NULL;
        }
        added += slot->hash == 0;
        slot->hash = hash;
        slot->header = header;
    }
    return PyLong_FromSsize_t(added);
}

static PyMethodDef methods[] = {
    {"keys", (PyCFunction)(void (*)(void))keys, METH_FASTCALL,
     "keys(prefix, ids, suffix): prefix + decimal id + suffix, per id."},
    {"maybe_stored", (PyCFunction)(void (*)(void))maybe_stored, METH_FASTCALL,
     "maybe_stored(bits, nbits, keys): indexes of the keys the Bloom filter may hold."},
    {"misses", (PyCFunction)(void (*)(void))misses, METH_FASTCALL,
     "misses(values, miss): the indexes of the items that are miss."},
    {"group", (PyCFunction)(void (*)(void))group, METH_FASTCALL,
     "group(keys, values, decoder_of): (keys without a value, {decoder: (keys, values)})."},
    {"pick", (PyCFunction)(void (*)(void))pick, METH_FASTCALL,
     "pick(keys, values, at): {keys[i]: values[i] for i in at}."},
    {"put_back", (PyCFunction)(void (*)(void))put_back, METH_FASTCALL,
     "put_back(out, at, keys, found): out[i] = found[keys[i]] for i in at."},
    {"take", (PyCFunction)(void (*)(void))take, METH_FASTCALL,
     "take(found, fill, keys, rows, raws): rows into found and fill if all are tuples."},
    {"claim", (PyCFunction)(void (*)(void))claim, METH_FASTCALL,
     "claim(flights, wanted, flight): (mine, others); flights maps mine's keys to flight."},
    {"release", (PyCFunction)(void (*)(void))release, METH_FASTCALL,
     "release(flights, keys, flight): delete the keys flights maps to flight."},
    {"resp_command", (PyCFunction)resp_command, METH_O,
     "resp_command(args): the command in RESP, an array of bulk strings."},
    {"unrendered", (PyCFunction)unrendered, METH_O,
     "unrendered(rows): the indexes of the rows whose JSON slot is not bytes."},
    {"resolve", (PyCFunction)(void (*)(void))resolve, METH_FASTCALL,
     "resolve(got, now_ms, max_age_ms, default_row, unavailable, statuses)."},
    {"join_json", (PyCFunction)join_json, METH_O,
     "join_json(parts): bytes parts and entity sections joined into one buffer."},
    {"view_block", (PyCFunction)(void (*)(void))view_block, METH_FASTCALL,
     "view_block(head, string_heads, vector_heads, rows, statuses, ages, parts)."},
    {"layout", (PyCFunction)layout, METH_O,
     "layout(spec): a view's layout parsed once, for decode_rows."},
    {"decode_rows", (PyCFunction)(void (*)(void))decode_rows, METH_FASTCALL,
     "decode_rows(layout, values, json=True): ViewCodec.decode_row per value (json false: "
     "ViewCodec.bare's), or None to leave to it."},
    {"unwritten", (PyCFunction)(void (*)(void))unwritten, METH_FASTCALL,
     "unwritten(memo, items): the items whose value's header the memo does not hold."},
    {"remember", (PyCFunction)(void (*)(void))remember, METH_FASTCALL,
     "remember(memo, items): the memo holds each item's header; returns slots filled."},
    {"json_numbers", (PyCFunction)(void (*)(void))json_numbers, METH_FASTCALL,
     "json_numbers(data, width): floats (4) or doubles (8) as orjson writes numpy arrays."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "service._native", "The compiled per-row loops of a bundle read.",
    0, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
