/* A small extension for the refwatch demo: the kind of code whose
 * reference operations refwatch counts per line. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Returns a list of n (x, y) tuples. */
static PyObject *
grid(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n))
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *point = Py_BuildValue("(nn)", i, i * i);
        if (point == NULL || PyList_Append(list, point) < 0) {
            Py_XDECREF(point);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(point);   /* the list holds it now */
    }
    return list;
}

/* Sums the x of each point, building and dropping a scratch tuple each time. */
static PyObject *
sum_x(PyObject *self, PyObject *points)
{
    long long total = 0;
    Py_ssize_t n = PyList_Size(points);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *scratch = PyTuple_Pack(1, PyList_GET_ITEM(points, i));
        if (scratch == NULL)
            return NULL;
        total += PyLong_AsLongLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(scratch, 0), 0));
        Py_DECREF(scratch); /* frees it: refwatch sees the _Py_Dealloc */
    }
    return PyLong_FromLongLong(total);
}

/* The length of a caption for the points: the caption is never released,
 * so every call leaks one string (refwatch names the line that made it). */
static PyObject *
caption_length(PyObject *self, PyObject *points)
{
    PyObject *caption = PyUnicode_FromFormat("%zd points", PyList_Size(points));
    if (caption == NULL)
        return NULL;
    return PyLong_FromSsize_t(PyUnicode_GetLength(caption));
}

/* Bindings that manage references through calls (as ctypes and cffi do). */
static PyObject *
retain(PyObject *self, PyObject *obj)
{
    Py_IncRef(obj);
    Py_IncRef(obj);
    Py_DecRef(obj);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"grid", grid, METH_VARARGS, "A list of n (x, x*x) tuples."},
    {"sum_x", sum_x, METH_O, "Sum of the first items."},
    {"caption_length", caption_length, METH_O, "Length of a caption (leaks it)."},
    {"retain", retain, METH_O, "Takes one reference to obj and keeps it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shapes", "refwatch demo extension", -1, methods,
};

PyMODINIT_FUNC
PyInit_shapes(void)
{
    return PyModule_Create(&module);
}
