/* Table: L1's store of (key: bytes) -> (expires_at, value), bounded in entries, with
 * CLOCK (second-chance) eviction; included by _native.c. Its specification is the Python
 * class service.native.PyTable: the same algorithm, step for step, so tests can compare
 * the two after every operation (tests/store/test_table.py).
 *
 * Why (docs/design.md, "The L1 table"): an L1 read of a 100-room bundle looks up about
 * 100 entries among tens of thousands. On this class of machine (an L3 share of a few MB,
 * about 150 ns to memory) a dict or cachebox lookup there took 350-450 ns, most of it
 * waiting on memory, one miss after the other: the hash index, the entry, the key, the
 * (expires_at, value) tuple, its float. Here an entry is one 32-byte slot holding the
 * hash, the key, the value and expires_at, and `get_many` looks keys up in three passes
 * over a batch (hash and prefetch the home slots; probe and prefetch the keys and
 * values; compare, check expiry and prefetch the value's items), so the misses of a
 * batch overlap instead of adding up, and what the caller reads next (each row's
 * items, in resolve and the encoders) is already on its way into the cache.
 *
 * Layout: open addressing, linear probing, capacity a power of two at least twice
 * max_rows (load <= 0.5), deletion by backward shift (no tombstones). A slot's `hash`
 * is the key's hash with its top bit cleared; the top bit is the CLOCK reference bit,
 * set by a hit of get_many, cleared by the sweeping hand, which evicts the first entry
 * it finds unreferenced, or, once it has cleared `sweep_limit` bits in one put, the
 * next entry whatever its bit: a put's sweep is bounded (all of a 500,000-row table
 * referenced, an unbounded sweep took 4.2-4.9 ms). Keys are exact bytes (their hash is
 * cached in the object and no Python code runs in a comparison). Old keys and values
 * are released only after the table is consistent again, so a value's destructor may
 * use the table.
 */

#define TABLE_REF ((uint64_t)1 << 63)
#define TABLE_BATCH 64
/* The reference bits one put may clear before it evicts regardless (Table's default). */
#define TABLE_SWEEP_LIMIT 1024

typedef struct {
    uint64_t hash; /* key hash & ~TABLE_REF, | TABLE_REF when referenced */
    PyObject *key; /* NULL: empty */
    PyObject *value;
    double expires_at;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t mask;
    Py_ssize_t used;
    Py_ssize_t max_rows;
    Py_ssize_t sweep_limit;
    size_t hand;
} Table;

/* Slot arrays of at least this many bytes are mapped on their own, aligned to and
 * advised for transparent huge pages (2 MB). L1's default table is 32 MB of slots: in
 * 4 KB pages, 8,192 of them, far more than the TLB holds, so nearly every lookup's
 * slot prefetch waited on a page walk (AMD machine of 2026-12-08: 46% of get_many's
 * samples on the instruction after it); in huge pages, 16. Where the kernel gives
 * none (THP off, or no huge page free), these are plain zeroed pages as before. */
#define TABLE_HUGE ((size_t)2 << 20)

static Slot *
slots_alloc(size_t cap)
{
    size_t bytes = cap * sizeof(Slot);
    if (bytes < TABLE_HUGE)
        return PyMem_Calloc(cap, sizeof(Slot));
    /* Over-map by one huge page and trim, so that the array starts on a 2 MB boundary
     * (bytes is a power of two, so it ends on one too). Anonymous pages read as zero. */
    char *raw = mmap(NULL, bytes + TABLE_HUGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *start = (char *)(((uintptr_t)raw + TABLE_HUGE - 1) & ~(uintptr_t)(TABLE_HUGE - 1));
    if (start > raw)
        munmap(raw, (size_t)(start - raw));
    munmap(start + bytes, (size_t)(raw + TABLE_HUGE - start)); /* > 0: start < raw + 2 MB */
#ifdef MADV_HUGEPAGE
    madvise(start, bytes, MADV_HUGEPAGE); /* advice: failing it leaves small pages */
#endif
    return (Slot *)start;
}

static void
slots_free(Slot *slots, size_t cap)
{
    size_t bytes = cap * sizeof(Slot);
    if (bytes < TABLE_HUGE)
        PyMem_Free(slots);
    else
        munmap(slots, bytes);
}

static inline uint64_t
table_hash(PyObject *key, int *err)
{
    Py_hash_t h = PyObject_Hash(key); /* exact bytes: cached after the first call */
    *err = h == -1 && PyErr_Occurred();
    return (uint64_t)(int64_t)h & ~TABLE_REF;
}

static inline int
table_same_key(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(a);
    return a == b
           || (n == PyBytes_GET_SIZE(b)
               && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)n) == 0);
}

/* The slot holding `key`, else -1 with *free_slot the empty slot where it would go. */
static Py_ssize_t
table_find(const Table *t, PyObject *key, uint64_t h, size_t *free_slot)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const Slot *s = &t->slots[i];
        if (s->key == NULL) {
            *free_slot = i;
            return -1;
        }
        if ((s->hash & ~TABLE_REF) == h && table_same_key(s->key, key))
            return (Py_ssize_t)i;
    }
}

/* Empty slot i by backward shift; its key and value go to *key and *value (the caller
 * releases them once the table is consistent). */
static void
table_remove(Table *t, size_t i, PyObject **key, PyObject **value)
{
    *key = t->slots[i].key;
    *value = t->slots[i].value;
    for (size_t j = (i + 1) & t->mask;; j = (j + 1) & t->mask) {
        Slot *s = &t->slots[j];
        if (s->key == NULL)
            break;
        size_t home = s->hash & ~TABLE_REF & t->mask;
        /* s may move to i if its home is not in the cyclic range (i, j] */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            t->slots[i] = *s;
            i = j;
        }
    }
    t->slots[i].key = NULL;
    t->slots[i].value = NULL;
    t->slots[i].hash = 0;
    t->slots[i].expires_at = 0.0;
    t->used--;
}

static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t max_rows, sweep_limit = TABLE_SWEEP_LIMIT;
    static char *kwlist[] = {"max_rows", "sweep_limit", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n:Table", kwlist, &max_rows, &sweep_limit))
        return NULL;
    if (max_rows < 1 || max_rows > ((Py_ssize_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "max_rows: expected 1 to 2**40");
        return NULL;
    }
    if (sweep_limit < 0) {
        PyErr_SetString(PyExc_ValueError, "sweep_limit: expected 0 or more");
        return NULL;
    }
    size_t cap = 8;
    while (cap < (size_t)max_rows * 2)
        cap <<= 1;
    Table *t = (Table *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->slots = slots_alloc(cap);
    if (t->slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->mask = cap - 1;
    t->max_rows = max_rows;
    t->sweep_limit = sweep_limit;
    return (PyObject *)t;
}

/* Release the keys and values of slots no longer in a table, and the slots. */
static void
table_release(Slot *old, size_t cap)
{
    if (old == NULL)
        return;
    for (size_t i = 0; i < cap; i++) {
        Py_XDECREF(old[i].key);
        Py_XDECREF(old[i].value);
    }
    slots_free(old, cap);
}

/* Drop every entry (the old slots are released after the table is empty again). */
static int
table_clear_all(Table *t)
{
    Slot *old = t->slots;
    size_t cap = t->mask + 1;
    Slot *fresh = slots_alloc(cap);
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->slots = fresh;
    t->used = 0;
    t->hand = 0;
    table_release(old, cap);
    return 0;
}

static int
table_traverse(Table *t, visitproc visit, void *arg)
{
    if (t->slots != NULL)
        for (size_t i = 0; i <= t->mask; i++)
            Py_VISIT(t->slots[i].value);
    return 0;
}

static int
table_gc_clear(Table *t)
{
    Slot *old = t->slots;
    size_t cap = t->mask + 1;
    t->slots = NULL; /* a dead table: only deallocation follows */
    t->used = 0;
    table_release(old, cap);
    return 0;
}

static void
table_dealloc(Table *t)
{
    PyObject_GC_UnTrack(t);
    table_gc_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int
table_live(Table *t)
{
    if (t->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the table was cleared by the garbage collector");
        return 0;
    }
    return 1;
}

static int
table_key(PyObject *key)
{
    return need(key, PyBytes_CheckExact(key), "a bytes key");
}

/* Check `key`, hash it and find its slot (*at, or -1 with *free_slot where it would go);
 * -1 on error. */
static int
table_locate(Table *t, PyObject *key, uint64_t *h, Py_ssize_t *at, size_t *free_slot)
{
    if (!table_live(t) || !table_key(key))
        return -1;
    int err;
    *h = table_hash(key, &err);
    if (err)
        return -1;
    *at = table_find(t, key, *h, free_slot);
    return 0;
}

/* The slot of `key`, -1: none, -2: an error. */
static Py_ssize_t
table_at(Table *t, PyObject *key)
{
    uint64_t h;
    Py_ssize_t i;
    size_t unused;
    return table_locate(t, key, &h, &i, &unused) < 0 ? -2 : i;
}

/* get_many(keys: list[bytes], now: float, miss) -> list: per key, its value if its entry
 * expires after `now` (and the entry is marked referenced), else `miss`. */
static PyObject *
table_get_many(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("get_many", nargs, 3) < 0 || !table_live(t))
        return NULL;
    PyObject *keys = args[0], *miss = args[2];
    if (!need(keys, PyList_Check(keys), "a list"))
        return NULL;
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    uint64_t hashes[TABLE_BATCH];
    Py_ssize_t at[TABLE_BATCH];
    for (Py_ssize_t base = 0; base < n; base += TABLE_BATCH) {
        Py_ssize_t m = n - base < TABLE_BATCH ? n - base : TABLE_BATCH;
        /* 1: hash, prefetch the home slot */
        for (Py_ssize_t b = 0; b < m; b++) {
            PyObject *key = PyList_GET_ITEM(keys, base + b);
            int err;
            if (!table_key(key))
                goto fail;
            hashes[b] = table_hash(key, &err);
            if (err)
                goto fail;
            __builtin_prefetch(&t->slots[hashes[b] & t->mask]);
        }
        /* 2: the first slot with the same hash; prefetch its key and value */
        for (Py_ssize_t b = 0; b < m; b++) {
            at[b] = -1;
            for (size_t i = hashes[b] & t->mask;; i = (i + 1) & t->mask) {
                const Slot *s = &t->slots[i];
                if (s->key == NULL)
                    break;
                if ((s->hash & ~TABLE_REF) == hashes[b]) {
                    at[b] = (Py_ssize_t)i;
                    __builtin_prefetch(s->key);
                    __builtin_prefetch(s->value);
                    break;
                }
            }
        }
        /* 3: compare keys (on a hash collision, probe on), check expiry, prefetch the
         * value's items */
        for (Py_ssize_t b = 0; b < m; b++) {
            PyObject *key = PyList_GET_ITEM(keys, base + b), *got = miss;
            Py_ssize_t i = at[b];
            if (i >= 0 && !table_same_key(t->slots[i].key, key)) {
                size_t unused;
                i = table_find(t, key, hashes[b], &unused);
            }
            if (i >= 0 && t->slots[i].expires_at > now) {
                Slot *s = &t->slots[i];
                s->hash |= TABLE_REF;
                got = s->value;
                if (PyTuple_CheckExact(got)) {
                    Py_ssize_t k = PyTuple_GET_SIZE(got);
                    for (Py_ssize_t j = 0; j < k && j < 8; j++)
                        __builtin_prefetch(PyTuple_GET_ITEM(got, j));
                }
            }
            Py_INCREF(got);
            PyList_SET_ITEM(out, base + b, got);
        }
    }
    return out;
fail:
    Py_DECREF(out); /* unset items are NULL: list_dealloc skips them */
    return NULL;
}

/* put(key, expires_at, value) -> 1 if an entry was evicted to make room, else 0. */
static PyObject *
table_put(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("put", nargs, 3) < 0)
        return NULL;
    PyObject *key = args[0], *value = args[2];
    uint64_t h;
    Py_ssize_t i;
    size_t free_slot;
    if (table_locate(t, key, &h, &i, &free_slot) < 0)
        return NULL;
    double expires_at = PyFloat_AsDouble(args[1]);
    if (expires_at == -1.0 && PyErr_Occurred())
        return NULL;
    if (i >= 0) { /* replace; the reference bit stays */
        Slot *s = &t->slots[i];
        PyObject *old = s->value;
        Py_INCREF(value);
        s->value = value;
        s->expires_at = expires_at;
        Py_DECREF(old);
        return PyLong_FromLong(0);
    }
    PyObject *gone_key = NULL, *gone_value = NULL;
    if (t->used >= t->max_rows) { /* CLOCK: the first unreferenced entry from the hand */
        Py_ssize_t cleared = 0;
        for (;;) {
            size_t j = t->hand;
            t->hand = (t->hand + 1) & t->mask;
            Slot *s = &t->slots[j];
            if (s->key == NULL)
                continue;
            if ((s->hash & TABLE_REF) && cleared < t->sweep_limit) {
                s->hash &= ~TABLE_REF;
                cleared++;
                continue;
            }
            table_remove(t, j, &gone_key, &gone_value);
            break;
        }
        table_find(t, key, h, &free_slot); /* the removal may have moved slots */
    }
    Slot *s = &t->slots[free_slot];
    Py_INCREF(key);
    Py_INCREF(value);
    s->hash = h;
    s->key = key;
    s->value = value;
    s->expires_at = expires_at;
    t->used++;
    Py_XDECREF(gone_key);
    Py_XDECREF(gone_value);
    return PyLong_FromLong(gone_key != NULL);
}

/* peek(key) -> (expires_at, value), or None: no entry (the reference bit is untouched). */
static PyObject *
table_peek(Table *t, PyObject *key)
{
    Py_ssize_t i = table_at(t, key);
    if (i == -2)
        return NULL;
    if (i < 0)
        Py_RETURN_NONE;
    /* Held while the tuple is built: an allocation may run the garbage collector, and a
     * finalizer may change the table. */
    PyObject *value = Py_NewRef(t->slots[i].value);
    PyObject *out = Py_BuildValue("(dO)", t->slots[i].expires_at, value);
    Py_DECREF(value);
    return out;
}

/* pop(key) -> True if there was an entry (now removed). */
static PyObject *
table_pop(Table *t, PyObject *key)
{
    Py_ssize_t i = table_at(t, key);
    if (i == -2)
        return NULL;
    if (i < 0)
        Py_RETURN_FALSE;
    PyObject *gone_key, *gone_value;
    table_remove(t, (size_t)i, &gone_key, &gone_value);
    Py_DECREF(gone_key);
    Py_DECREF(gone_value);
    Py_RETURN_TRUE;
}

static PyObject *
table_clear(Table *t, PyObject *unused)
{
    if (!table_live(t) || table_clear_all(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* items() -> [(key, expires_at, value, referenced)] in slot order, for tests. */
static PyObject *
table_items(Table *t, PyObject *unused)
{
    if (!table_live(t))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; t->slots != NULL && i <= t->mask; i++) { /* allocations below may
                                            run finalizers that change the table */
        const Slot *s = &t->slots[i];
        if (s->key == NULL)
            continue;
        PyObject *key = Py_NewRef(s->key), *value = Py_NewRef(s->value);
        PyObject *item = Py_BuildValue("(OdOO)", key, s->expires_at, value,
                                       (s->hash & TABLE_REF) ? Py_True : Py_False);
        Py_DECREF(key);
        Py_DECREF(value);
        if (append_new(out, item) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static Py_ssize_t
table_len(Table *t)
{
    return t->used;
}

static PyObject *
table_capacity(Table *t, void *unused)
{
    return PyLong_FromSize_t(t->mask + 1);
}

static PyObject *
table_sweep_limit(Table *t, void *unused)
{
    return PyLong_FromSsize_t(t->sweep_limit);
}

static PyObject *
table_max_rows(Table *t, void *unused)
{
    return PyLong_FromSsize_t(t->max_rows);
}

static PyObject *
table_hand(Table *t, void *unused)
{
    return PyLong_FromSize_t(t->hand);
}

static PyMethodDef table_methods[] = {
    {"get_many", (PyCFunction)(void (*)(void))table_get_many, METH_FASTCALL,
     "get_many(keys, now, miss): per key its value if it expires after now, else miss."},
    {"put", (PyCFunction)(void (*)(void))table_put, METH_FASTCALL,
     "put(key, expires_at, value): 1 if an entry was evicted for it, else 0."},
    {"peek", (PyCFunction)table_peek, METH_O,
     "peek(key): (expires_at, value) or None, expired or not."},
    {"pop", (PyCFunction)table_pop, METH_O, "pop(key): True if an entry was removed."},
    {"clear", (PyCFunction)table_clear, METH_NOARGS, "clear(): drop every entry."},
    {"items", (PyCFunction)table_items, METH_NOARGS,
     "items(): [(key, expires_at, value, referenced)] in slot order (for tests)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef table_getset[] = {
    {"capacity", (getter)table_capacity, NULL, "slots (a power of two >= 2 * max_rows)", NULL},
    {"max_rows", (getter)table_max_rows, NULL, "the most entries held", NULL},
    {"sweep_limit", (getter)table_sweep_limit, NULL, "reference bits one put may clear", NULL},
    {"hand", (getter)table_hand, NULL, "the CLOCK hand's slot", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods table_as_sequence = {
    .sq_length = (lenfunc)table_len,
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service._native.Table",
    .tp_doc = "Table(max_rows, sweep_limit=1024): L1's bounded map of bytes keys to "
              "(expires_at, value), CLOCK eviction (service.native.PyTable is its "
              "specification).",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_gc_clear,
    .tp_methods = table_methods,
    .tp_getset = table_getset,
    .tp_as_sequence = &table_as_sequence,
};
