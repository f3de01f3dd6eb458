/* rda._native: the Python package's two hot calls, rda_attention_forward
 * and rda_attention_backward, with their tensors described in C.
 *
 * The package (python/rda/ops.py) checks the arguments, allocates the
 * outputs and finds the context; this module turns each torch.Tensor into
 * an rda_tensor (its data_ptr(), shape, stride() and dtype) and makes the
 * call with the GIL released. Done in Python, through struct and ctypes,
 * that costs about 0.8 us a tensor, most of what the package adds to a
 * call beyond the allocations (docs/PERFORMANCE.md, host overhead).
 *
 * The library's entry points arrive as addresses from the package's ctypes
 * handle (init), so this module does not link the library: the one copy
 * ctypes loaded (next to the package, or RDA_LIBRARY) serves both paths.
 * CPython's limited API (one abi3 build for every CPython >= 3.9), no
 * PyTorch headers. Without this module the package describes the tensors
 * in Python. */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <string.h>

#include "rda.h"

typedef rda_status (*forward_fn)(rda_context *, const rda_config *, const rda_tensor *, const rda_tensor *,
                                 const rda_tensor *, const rda_tensor *, const rda_tensor *);
typedef rda_status (*backward_fn)(rda_context *, const rda_config *, const rda_tensor *, const rda_tensor *,
                                  const rda_tensor *, const rda_tensor *, const rda_tensor *, const rda_tensor *,
                                  const rda_tensor *, const rda_tensor *, const rda_tensor *);

static forward_fn forward_call;
static backward_fn backward_call;
static PyObject *dtypes;                                   /* {torch.dtype: rda_dtype} */
static PyObject *s_data_ptr, *s_shape, *s_stride, *s_dtype; /* attribute names */

/* *out from tensor t; 0, or -1 with a Python exception set. */
static int describe(PyObject *t, rda_tensor *out) {
    memset(out, 0, sizeof *out);
    PyObject *shape = PyObject_GetAttr(t, s_shape);
    if (!shape) return -1;
    PyObject *strides = PyObject_CallMethodObjArgs(t, s_stride, NULL);
    PyObject *ptr = strides ? PyObject_CallMethodObjArgs(t, s_data_ptr, NULL) : NULL;
    PyObject *dt = ptr ? PyObject_GetAttr(t, s_dtype) : NULL;
    int rc = -1;
    if (!dt) goto done;
    if (!PyTuple_Check(shape) || !PyTuple_Check(strides)) {
        PyErr_SetString(PyExc_TypeError, "rda: expected torch.Tensor arguments");
        goto done;
    }
    const Py_ssize_t nd = PyTuple_Size(shape);
    if (nd > RDA_MAX_DIMS || PyTuple_Size(strides) != nd) {
        PyErr_Format(PyExc_ValueError, "rda: tensors of at most %d dimensions are taken (got %zd)", RDA_MAX_DIMS,
                     nd);
        goto done;
    }
    PyObject *code = PyDict_GetItemWithError(dtypes, dt); /* (borrowed) */
    if (!code) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "rda: unsupported tensor dtype");
        goto done;
    }
    out->data = PyLong_AsVoidPtr(ptr);
    out->dtype = (rda_dtype)PyLong_AsLong(code);
    out->ndim = (int32_t)nd;
    for (Py_ssize_t i = 0; i < nd; i++) {
        out->shape[i] = PyLong_AsLongLong(PyTuple_GetItem(shape, i));
        out->strides[i] = PyLong_AsLongLong(PyTuple_GetItem(strides, i));
    }
    rc = PyErr_Occurred() ? -1 : 0;
done:
    Py_XDECREF(dt);
    Py_XDECREF(ptr);
    Py_XDECREF(strides);
    Py_DECREF(shape);
    return rc;
}

/* forward(ctx, cfg, q, k, v, o, lse or None) and backward(ctx, cfg, q, k,
 * v, o, lse, dout, dq, dk, dv): the context and config addresses, then the
 * call's tensors, described and passed with the GIL released. */
static PyObject *call(PyObject *args, bool backward) {
    const Py_ssize_t n = backward ? 9 : 5;
    if (backward ? !backward_call : !forward_call)
        return PyErr_Format(PyExc_RuntimeError, "rda: _native.init was not called");
    if (!PyTuple_Check(args) || PyTuple_Size(args) != n + 2)
        return PyErr_Format(PyExc_TypeError, "rda: expected a context, a config and %zd tensors", n);
    rda_context *ctx = (rda_context *)PyLong_AsVoidPtr(PyTuple_GetItem(args, 0));
    const rda_config *cfg = (const rda_config *)PyLong_AsVoidPtr(PyTuple_GetItem(args, 1));
    if (PyErr_Occurred()) return NULL;
    if (!ctx || !cfg) return PyErr_Format(PyExc_ValueError, "rda: null context or config");
    rda_tensor t[9];
    const rda_tensor *lse = &t[4];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyTuple_GetItem(args, i + 2);
        if (!backward && i == 4 && x == Py_None) { /* the forward's LSE is optional */
            lse = NULL;
            break;
        }
        if (describe(x, &t[i])) return NULL;
    }
    rda_status st;
    Py_BEGIN_ALLOW_THREADS
    st = backward ? backward_call(ctx, cfg, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8])
                  : forward_call(ctx, cfg, &t[0], &t[1], &t[2], &t[3], lse);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong((long)st);
}

static PyObject *native_forward(PyObject *self, PyObject *args) {
    (void)self;
    return call(args, false);
}

static PyObject *native_backward(PyObject *self, PyObject *args) {
    (void)self;
    return call(args, true);
}

/* init(forward address, backward address, {torch.dtype: rda_dtype}) */
static PyObject *native_init(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *f, *b, *d;
    if (!PyArg_ParseTuple(args, "OOO!", &f, &b, &PyDict_Type, &d)) return NULL;
    void *fp = PyLong_AsVoidPtr(f), *bp = PyLong_AsVoidPtr(b);
    if (PyErr_Occurred()) return NULL;
    if (!fp || !bp) return PyErr_Format(PyExc_ValueError, "rda: null entry point");
    forward_call = (forward_fn)fp;
    backward_call = (backward_fn)bp;
    Py_INCREF(d);
    PyObject *old = dtypes;
    dtypes = d;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", native_init, METH_VARARGS, "init(forward, backward, dtypes): the library's entry points and dtype codes"},
    {"forward", native_forward, METH_VARARGS, "forward(ctx, cfg, q, k, v, o, lse or None) -> rda_status"},
    {"backward", native_backward, METH_VARARGS, "backward(ctx, cfg, q, k, v, o, lse, dout, dq, dk, dv) -> rda_status"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "The package's hot calls into the C library.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    s_data_ptr = PyUnicode_InternFromString("data_ptr");
    s_shape = PyUnicode_InternFromString("shape");
    s_stride = PyUnicode_InternFromString("stride");
    s_dtype = PyUnicode_InternFromString("dtype");
    if (!s_data_ptr || !s_shape || !s_stride || !s_dtype) return NULL;
    return PyModule_Create(&module);
}
