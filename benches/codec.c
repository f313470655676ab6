/* Benchmark extension for the mixed workload: a small JSON codec with a C
 * core (dumps/loads of dicts with str keys, lists, tuples, str, int, float,
 * bool, None), so the workload does not depend on PyPI. Strings are encoded
 * as UTF-8 with the escapes JSON requires; \uXXXX is decoded (surrogate
 * pairs included). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *data = PyMem_Realloc(b->data, cap);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

#define PUTS(b, s) put((b), (s), (Py_ssize_t)strlen(s))

static int
encode_str(Buf *b, PyObject *o)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL || put(b, "\"", 1) < 0)
        return -1;
    Py_ssize_t run = 0; /* start of the bytes not yet written */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        if (put(b, s + run, i - run) < 0 || PUTS(b, esc) < 0)
            return -1;
        run = i + 1;
    }
    return put(b, s + run, n - run) < 0 ? -1 : put(b, "\"", 1);
}

static int encode(Buf *b, PyObject *o);

static int
encode_items(Buf *b, PyObject *seq)
{
    PyObject *fast = PySequence_Fast(seq, "not a sequence");
    if (fast == NULL)
        return -1;
    int rc = put(b, "[", 1);
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(fast); i++) {
        if (i > 0)
            rc = put(b, ",", 1);
        if (rc == 0)
            rc = encode(b, PySequence_Fast_GET_ITEM(fast, i));
    }
    Py_DECREF(fast);
    return rc < 0 ? -1 : put(b, "]", 1);
}

static int
encode_dict(Buf *b, PyObject *dict)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int first = 1;
    if (put(b, "{", 1) < 0)
        return -1;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be str");
            return -1;
        }
        if ((!first && put(b, ",", 1) < 0) || encode_str(b, key) < 0 || put(b, ":", 1) < 0 ||
            encode(b, value) < 0)
            return -1;
        first = 0;
    }
    return put(b, "}", 1);
}

static int
encode_float(Buf *b, PyObject *o)
{
    char *repr = PyOS_double_to_string(PyFloat_AS_DOUBLE(o), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL)
        return -1;
    int rc = PUTS(b, repr);
    PyMem_Free(repr);
    return rc;
}

static int
encode(Buf *b, PyObject *o)
{
    char num[32];
    if (o == Py_None)
        return PUTS(b, "null");
    if (o == Py_True)
        return PUTS(b, "true");
    if (o == Py_False)
        return PUTS(b, "false");
    if (PyLong_Check(o)) {
        long long v = PyLong_AsLongLong(o);
        if (v == -1 && PyErr_Occurred())
            return -1;
        snprintf(num, sizeof num, "%lld", v);
        return PUTS(b, num);
    }
    if (PyFloat_Check(o))
        return encode_float(b, o);
    if (PyUnicode_Check(o))
        return encode_str(b, o);
    if (PyDict_Check(o))
        return encode_dict(b, o);
    if (PyList_Check(o) || PyTuple_Check(o))
        return encode_items(b, o);
    PyErr_Format(PyExc_TypeError, "%R is not JSON serializable", o);
    return -1;
}

static PyObject *
dumps(PyObject *self, PyObject *obj)
{
    Buf b = {NULL, 0, 0};
    PyObject *result = NULL;
    if (encode(&b, obj) == 0)
        result = PyUnicode_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    return result;
}

typedef struct {
    const char *start, *p, *end;
} Parser;

static PyObject *
syntax_error(Parser *ps, const char *what)
{
    PyErr_Format(PyExc_ValueError, "%s at byte %zd", what, (Py_ssize_t)(ps->p - ps->start));
    return NULL;
}

static void
skip_space(Parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int
hex4(Parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return -1;
    *out = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        unsigned d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                           : 16;
        if (d == 16)
            return -1;
        *out = *out * 16 + d;
    }
    return 0;
}

static int
put_utf8(Buf *b, unsigned cp)
{
    char u[4];
    int n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return put(b, u, n);
}

/* One escape after the backslash: appended to b as UTF-8. */
static int
unescape(Parser *ps, Buf *b)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = *ps->p++;
    const char *at = c ? strchr(from, c) : NULL;
    if (at != NULL)
        return put(b, &to[at - from], 1);
    unsigned cp, low;
    if (c != 'u' || hex4(ps, &cp) < 0)
        return -1;
    if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
        ps->p += 2;
        if (hex4(ps, &low) < 0 || low < 0xdc00 || low > 0xdfff)
            return -1;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    return put_utf8(b, cp);
}

static PyObject *
parse_string(Parser *ps)
{
    const char *start = ++ps->p; /* past the opening quote */
    while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\')
        ps->p++;
    if (ps->p < ps->end && *ps->p == '"') /* no escapes: the common case */
        return PyUnicode_FromStringAndSize(start, ps->p++ - start);
    Buf b = {NULL, 0, 0};
    PyObject *result = NULL;
    if (put(&b, start, ps->p - start) < 0)
        return NULL;
    while (ps->p < ps->end && *ps->p != '"') {
        int rc = *ps->p == '\\' ? (ps->p++, ps->p < ps->end ? unescape(ps, &b) : -1) : put(&b, ps->p++, 1);
        if (rc < 0)
            break;
    }
    if (ps->p < ps->end && *ps->p == '"') {
        ps->p++;
        result = PyUnicode_FromStringAndSize(b.data, b.len);
    } else if (!PyErr_Occurred()) {
        syntax_error(ps, "bad string");
    }
    PyMem_Free(b.data);
    return result;
}

static PyObject *
parse_number(Parser *ps)
{
    const char *start = ps->p;
    int is_float = 0;
    while (ps->p < ps->end && *ps->p && strchr("+-0123456789.eE", *ps->p)) {
        is_float |= *ps->p == '.' || *ps->p == 'e' || *ps->p == 'E';
        ps->p++;
    }
    char text[64];
    if (ps->p == start || ps->p - start >= (Py_ssize_t)sizeof text)
        return syntax_error(ps, "bad number");
    memcpy(text, start, ps->p - start);
    text[ps->p - start] = '\0';
    if (is_float) {
        double v = PyOS_string_to_double(text, NULL, PyExc_ValueError);
        return v == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(v);
    }
    return PyLong_FromString(text, NULL, 10);
}

static PyObject *parse_value(Parser *ps);

/* After an item of a list or dict: 1 = another follows, 0 = closed, -1 = error. */
static int
next_item(Parser *ps, char close)
{
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        return 1;
    }
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    syntax_error(ps, "expected , or a closing bracket");
    return -1;
}

static PyObject *
parse_list(Parser *ps)
{
    PyObject *list = PyList_New(0);
    ps->p++;
    skip_space(ps);
    if (list == NULL || (ps->p < ps->end && *ps->p == ']' && ps->p++))
        return list;
    for (int more = 1; more == 1;) {
        PyObject *item = parse_value(ps);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
        more = next_item(ps, ']');
        if (more < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* One "key": value pair into dict; 0 or -1. */
static int
parse_pair(Parser *ps, PyObject *dict)
{
    skip_space(ps);
    if (ps->p >= ps->end || *ps->p != '"') {
        syntax_error(ps, "expected a string key");
        return -1;
    }
    PyObject *key = parse_string(ps);
    if (key == NULL)
        return -1;
    skip_space(ps);
    if (ps->p >= ps->end || *ps->p++ != ':') {
        Py_DECREF(key);
        syntax_error(ps, "expected :");
        return -1;
    }
    PyObject *value = parse_value(ps);
    int rc = value == NULL ? -1 : PyDict_SetItem(dict, key, value);
    Py_DECREF(key);
    Py_XDECREF(value);
    return rc;
}

static PyObject *
parse_dict(Parser *ps)
{
    PyObject *dict = PyDict_New();
    ps->p++;
    skip_space(ps);
    if (dict == NULL || (ps->p < ps->end && *ps->p == '}' && ps->p++))
        return dict;
    for (int more = 1; more == 1;) {
        more = parse_pair(ps, dict) < 0 ? -1 : next_item(ps, '}');
        if (more < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *
parse_literal(Parser *ps, const char *word, PyObject *value)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return syntax_error(ps, "unexpected character");
    ps->p += n;
    Py_INCREF(value);
    return value;
}

static PyObject *
parse_value(Parser *ps)
{
    skip_space(ps);
    if (ps->p >= ps->end)
        return syntax_error(ps, "unexpected end");
    switch (*ps->p) {
    case '{':
        return parse_dict(ps);
    case '[':
        return parse_list(ps);
    case '"':
        return parse_string(ps);
    case 't':
        return parse_literal(ps, "true", Py_True);
    case 'f':
        return parse_literal(ps, "false", Py_False);
    case 'n':
        return parse_literal(ps, "null", Py_None);
    default:
        return parse_number(ps);
    }
}

static PyObject *
loads(PyObject *self, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL)
        return NULL;
    Parser ps = {s, s, s + n};
    PyObject *result = parse_value(&ps);
    skip_space(&ps);
    if (result != NULL && ps.p != ps.end) {
        Py_DECREF(result);
        return syntax_error(&ps, "extra data");
    }
    return result;
}

static PyMethodDef methods[] = {
    {"dumps", dumps, METH_O, NULL},
    {"loads", loads, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "benchcodec", NULL, -1, methods};

PyMODINIT_FUNC
PyInit_benchcodec(void)
{
    return PyModule_Create(&module);
}
