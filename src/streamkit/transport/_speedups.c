/*
 * _streamkit_speedups: the common case of LibcurlTransport._drain in C.
 *
 * A Reader calls libcurl's curl_ws_recv (through the function address curl_cffi's cffi
 * module exposes, so it is the very libcurl curl_cffi loaded) in a loop and appends every
 * whole, unfragmented TEXT/BINARY message within the size limit to the transport's deque
 * as a streamkit.transport.base.Frame. Anything else (a fragment, a frame larger than the
 * receive buffer, CLOSE, PONG, an oversize message, an unknown frame) is left in the buffer
 * and out-parameters for the Python code in libcurl.py, which stays the reference: see
 * LibcurlTransport._drain.
 *
 * No GIL release: curl_ws_recv does not block (CONNECT_ONLY mode), and the handle is used
 * by the event loop thread only.
 *
 * Reader.drain(max_count) returns (status, appended):
 *   status > 0   curl_ws_recv's return code (CURLE_AGAIN or an error); nothing pending
 *   status == 0  a frame Python must handle waits in the buffer (as if curl_ws_recv had
 *                just returned CURLE_OK)
 *   status == -1 max_count messages were appended; curl_ws_recv was not called again
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* libcurl's public struct (curl/websockets.h); curl_off_t is 64-bit. libcurl.py checks
 * curl_cffi's cdef has the same offsets before using this module. */
struct curl_ws_frame {
    int age;
    int flags;
    int64_t offset;
    int64_t bytesleft;
    size_t len;
};

typedef int (*ws_recv_fn)(void *curl, void *buffer, size_t buflen, size_t *nread,
                          const struct curl_ws_frame **meta);

#define WS_TEXT 1
#define WS_BINARY 2

typedef struct {
    PyObject_HEAD
    ws_recv_fn recv;
    void *curl;
    char *buf;
    size_t bufsize;
    size_t *nread;
    const struct curl_ws_frame **meta;
    PyTypeObject *frame_type;
    PyObject *target;  /* the deque (or list) the frames go to */
    PyObject *append;  /* target.append, unless target is a list */
    size_t max_size;
} Reader;

static PyObject *
new_frame(PyTypeObject *type, PyObject *data, int binary)
{
#if PY_VERSION_HEX < 0x030E0000
    /* What tuple's tp_new does for a subclass without extra fields, minus the temporary
     * argument tuple (checked in Reader_new). 3.14 added a hash cache to tuples that
     * tp_alloc's zeroed memory would not initialise, so newer versions take tp_new. */
    PyObject *frame = type->tp_alloc(type, 2);
    if (frame == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyTuple_SET_ITEM(frame, 0, data);
    PyTuple_SET_ITEM(frame, 1, Py_NewRef(binary ? Py_True : Py_False));
    return frame;
#else
    PyObject *args = PyTuple_New(2);
    if (args == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyTuple_SET_ITEM(args, 0, data);
    PyTuple_SET_ITEM(args, 1, Py_NewRef(binary ? Py_True : Py_False));
    PyObject *frame = PyTuple_Type.tp_new(type, args, NULL);
    Py_DECREF(args);
    return frame;
#endif
}

static PyObject *
Reader_drain(Reader *self, PyObject *arg)
{
    Py_ssize_t max_count = PyLong_AsSsize_t(arg);
    if (max_count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_count < 1) {
        PyErr_SetString(PyExc_ValueError, "max_count must be >= 1");
        return NULL;
    }
    if (self->curl == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "reader is closed");
        return NULL;
    }
    const int is_list = self->append == NULL;
    Py_ssize_t got = 0;
    long status;
    for (;;) {
        if (got >= max_count) {
            status = -1;
            break;
        }
        int rc = self->recv(self->curl, self->buf, self->bufsize, self->nread, self->meta);
        if (rc) {
            status = rc;
            break;
        }
        const struct curl_ws_frame *frame = *self->meta;
        const int flags = frame->flags;
        const size_t n = *self->nread;
        /* Only TEXT or BINARY without any other flag (CONT, CLOSE, PING, PONG), the whole
         * frame in this read, within max_message_size: everything else is Python's. */
        if ((flags & ~(WS_TEXT | WS_BINARY)) || !(flags & (WS_TEXT | WS_BINARY))
            || frame->bytesleft != 0 || n > self->max_size) {
            status = 0;
            break;
        }
        PyObject *data = PyBytes_FromStringAndSize(self->buf, (Py_ssize_t)n);
        if (data == NULL) {
            return NULL;
        }
        PyObject *item = new_frame(self->frame_type, data, flags & WS_BINARY);
        if (item == NULL) {
            return NULL;
        }
        /* A frame holds bytes and a bool: it can never be part of a cycle. The collector
         * untracks such tuples itself, but only exact tuples, not a subclass like Frame, so
         * every queued frame would otherwise be traversed by every collection under load. */
        PyObject_GC_UnTrack(item);
        int failed;
        if (is_list) {
            failed = PyList_Append(self->target, item);
        }
        else {
            PyObject *res = PyObject_CallOneArg(self->append, item);
            failed = res == NULL;
            Py_XDECREF(res);
        }
        Py_DECREF(item);
        if (failed) {
            return NULL;
        }
        got++;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        return NULL;
    }
    PyObject *s = PyLong_FromLong(status);
    PyObject *g = PyLong_FromSsize_t(got);
    if (s == NULL || g == NULL) {
        Py_XDECREF(s);
        Py_XDECREF(g);
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, s);
    PyTuple_SET_ITEM(result, 1, g);
    return result;
}

static PyObject *
Reader_close(Reader *self, PyObject *Py_UNUSED(ignored))
{
    self->curl = NULL;
    Py_RETURN_NONE;
}

static void *
as_pointer(PyObject *value, const char *what)
{
    void *p = PyLong_AsVoidPtr(value);
    if (p == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s must not be NULL", what);
    }
    return p;
}

static PyObject *
Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"recv", "handle", "buffer", "size", "nread", "meta",
                            "frame_type", "target", "max_size", NULL};
    PyObject *recv, *handle, *buffer, *nread, *meta, *target;
    Py_ssize_t size, max_size;
    PyTypeObject *frame_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnOOO!On:Reader", names, &recv, &handle,
                                     &buffer, &size, &nread, &meta, &PyType_Type, &frame_type,
                                     &target, &max_size)) {
        return NULL;
    }
    if (size < 1 || max_size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 1 and max_size >= 0");
        return NULL;
    }
    if (!PyType_IsSubtype(frame_type, &PyTuple_Type)
        || frame_type->tp_basicsize != PyTuple_Type.tp_basicsize
        || frame_type->tp_itemsize != PyTuple_Type.tp_itemsize) {
        PyErr_SetString(PyExc_TypeError, "frame_type must be a tuple subclass without fields");
        return NULL;
    }
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->recv = (ws_recv_fn)as_pointer(recv, "recv");
    self->curl = as_pointer(handle, "handle");
    self->buf = as_pointer(buffer, "buffer");
    self->nread = as_pointer(nread, "nread");
    self->meta = as_pointer(meta, "meta");
    if (PyErr_Occurred()) {
        Py_DECREF(self);
        return NULL;
    }
    self->bufsize = (size_t)size;
    self->max_size = (size_t)max_size;
    self->frame_type = (PyTypeObject *)Py_NewRef(frame_type);
    self->target = Py_NewRef(target);
    if (!PyList_CheckExact(target)) {
        self->append = PyObject_GetAttrString(target, "append");
        if (self->append == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static int
Reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->frame_type);
    Py_VISIT(self->target);
    Py_VISIT(self->append);
    return 0;
}

static int
Reader_clear(Reader *self)
{
    Py_CLEAR(self->frame_type);
    Py_CLEAR(self->target);
    Py_CLEAR(self->append);
    return 0;
}

static void
Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"drain", (PyCFunction)Reader_drain, METH_O,
     "drain(max_count) -> (status, appended): read and append whole data messages."},
    {"close", (PyCFunction)Reader_close, METH_NOARGS,
     "Forget the curl handle: drain() raises from now on."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_streamkit_speedups.Reader",
    .tp_doc = "curl_ws_recv loop for LibcurlTransport (addresses as integers).",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_methods = Reader_methods,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_streamkit_speedups",
    .m_doc = "Optional C accelerator for streamkit's libcurl transport.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__streamkit_speedups(void)
{
    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Reader", (PyObject *)&ReaderType) < 0
        || PyModule_AddIntConstant(module, "FRAME_STRUCT_SIZE", sizeof(struct curl_ws_frame)) < 0
        || PyModule_AddIntConstant(module, "FLAGS_OFFSET", offsetof(struct curl_ws_frame, flags)) < 0
        || PyModule_AddIntConstant(module, "BYTESLEFT_OFFSET",
                                   offsetof(struct curl_ws_frame, bytesleft)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
