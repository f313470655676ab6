/* Benchmark extension: a refcount-heavy loop in which the extension's own
 * work dominates, a call microbenchmark of explicit Py_IncRef/Py_DecRef
 * through the (patched) GOT, many fresh objects kept alive, and objects
 * made by Python stored by a method and by a type's slots. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Builds a tuple, appends 10 fresh ints to a list, reads and releases them,
 * returns the list. */
static PyObject *
work(PyObject *self, PyObject *arg)
{
    long base = PyLong_AsLong(arg);
    PyObject *tuple = Py_BuildValue("(ll)", base, base + 1);
    if (tuple == NULL)
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        Py_DECREF(tuple);
        return NULL;
    }
    for (long i = 0; i < 10; i++) {
        PyObject *n = PyLong_FromLong(base * 10 + i + 1000);
        if (n == NULL || PyList_Append(list, n) < 0) {
            Py_XDECREF(n);
            Py_DECREF(list);
            Py_DECREF(tuple);
            return NULL;
        }
        Py_DECREF(n);
    }
    long sum = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_INCREF(item);
        sum += PyLong_AsLong(item);
        Py_DECREF(item);
    }
    Py_DECREF(tuple);
    (void)sum;
    return list;
}

/* `work` with a leak: an inline Py_INCREF of its argument never given
 * back (the bug the watchpoints pin). */
static PyObject *
work_leaky(PyObject *self, PyObject *arg)
{
    PyObject *list = work(self, arg);
    Py_INCREF(arg);
    return list;
}

/* n explicit Py_IncRef + Py_DecRef pairs on obj. */
static PyObject *
calls(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On", &obj, &n))
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_IncRef(obj);
        Py_DecRef(obj);
    }
    Py_RETURN_NONE;
}

/* A list of n fresh ints (PyLong_FromLong results, none of them cached small
 * ints), every one created here and kept alive by the list. */
static PyObject *
fresh_ints(PyObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyLong_FromLong(1000 + (long)i);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* A small method as many extensions write them: parses its arguments with
 * PyArg_ParseTuple, does a little work, returns a new int. */
static PyObject *
parse_args(PyObject *self, PyObject *args)
{
    PyObject *seq;
    long n;
    if (!PyArg_ParseTuple(args, "Ol", &seq, &n))
        return NULL;
    Py_ssize_t size = PyObject_Length(seq);
    if (size < 0)
        return NULL;
    return PyLong_FromLong(n + (long)size);
}

/* stores: objects made by Python kept by the extension, correctly. `kept`
 * is a module-level list (also benchloop.kept, which Python clears), `keep`
 * appends its argument to it. */
static PyObject *kept;

static PyObject *
keep(PyObject *self, PyObject *arg)
{
    if (PyList_Append(kept, arg) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Holder(value): an object holding one member, set by tp_init and by the
 * `value` setter, released by tp_dealloc. */
typedef struct {
    PyObject_HEAD
    PyObject *value;
} Holder;

static int
holder_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", NULL};
    Holder *self = (Holder *)op;
    PyObject *value, *old;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &value))
        return -1;
    Py_INCREF(value);
    old = self->value;
    self->value = value;
    Py_XDECREF(old);
    return 0;
}

static PyObject *
holder_get_value(PyObject *op, void *closure)
{
    Holder *self = (Holder *)op;
    PyObject *value = self->value ? self->value : Py_None;
    Py_INCREF(value);
    return value;
}

static int
holder_set_value(PyObject *op, PyObject *value, void *closure)
{
    Holder *self = (Holder *)op;
    PyObject *old;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "value cannot be deleted");
        return -1;
    }
    Py_INCREF(value);
    old = self->value;
    self->value = value;
    Py_XDECREF(old);
    return 0;
}

static void
holder_dealloc(PyObject *op)
{
    Holder *self = (Holder *)op;
    Py_XDECREF(self->value);
    Py_TYPE(op)->tp_free(op);
}

static PyGetSetDef holder_getset[] = {
    {"value", holder_get_value, holder_set_value, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HolderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "benchloop.Holder",
    .tp_basicsize = sizeof(Holder),
    .tp_dealloc = holder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_getset = holder_getset,
    .tp_init = holder_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"work", work, METH_O, NULL},
    {"work_leaky", work_leaky, METH_O, NULL},
    {"calls", calls, METH_VARARGS, NULL},
    {"parse_args", parse_args, METH_VARARGS, NULL},
    {"fresh_ints", fresh_ints, METH_O, NULL},
    {"keep", keep, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "benchloop", NULL, -1, methods};

PyMODINIT_FUNC
PyInit_benchloop(void)
{
    if (PyType_Ready(&HolderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    kept = PyList_New(0);
    if (kept == NULL)
        goto error;
    Py_INCREF(kept);
    if (PyModule_AddObject(m, "kept", kept) < 0) {
        Py_DECREF(kept);
        goto error;
    }
    Py_INCREF(&HolderType);
    if (PyModule_AddObject(m, "Holder", (PyObject *)&HolderType) < 0) {
        Py_DECREF(&HolderType);
        goto error;
    }
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
