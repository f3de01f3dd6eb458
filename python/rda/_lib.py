"""ctypes view of the C API (include/rda.h): the structs, the calls the
package makes, and one library context per device, stream and thread."""
import ctypes
import os
import threading

# ---- the shared library: next to this file (pip install), or RDA_LIBRARY


def _load():
    here = os.path.dirname(os.path.abspath(__file__))
    names = [os.environ["RDA_LIBRARY"]] if os.environ.get("RDA_LIBRARY") else []
    names += [os.path.join(here, n) for n in sorted(os.listdir(here)) if n.startswith("librda.so")]
    errors = []
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError as e:
            errors.append(f"{n}: {e}")
    raise ImportError("rda: the C library (librda.so) was not found next to the package or in RDA_LIBRARY"
                      + ("; " + "; ".join(errors) if errors else ""))


lib = _load()

try:  # the hot calls with the tensors described in C (python/native/rda_native.c); ops.py falls back to ctypes
    from . import _native
except ImportError:
    _native = None

MAX_DIMS, MAX_PATTERNS, CONFIG_VERSION = 4, 16, 1
F32, F16, BF16, F64 = 0, 1, 2, 3
DENSE, GROUPS, LONGNET = 0, 1, 2
BACKEND_CPU, BACKEND_REFERENCE, BACKEND_CUDA = 0, 1, 3
STREAM_CALLER = 1


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * MAX_DIMS), ("strides", ctypes.c_int64 * MAX_DIMS)]


class Pattern(ctypes.Structure):
    _fields_ = [("segment", ctypes.c_int64), ("dilation", ctypes.c_int64)]


class Config(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("version", ctypes.c_uint32), ("mode", ctypes.c_int),
                ("causal", ctypes.c_int32), ("scale", ctypes.c_double), ("num_patterns", ctypes.c_int32),
                ("patterns", Pattern * MAX_PATTERNS), ("layout", ctypes.c_int), ("allow_tf32", ctypes.c_int32),
                ("timeout_seconds", ctypes.c_double), ("deterministic", ctypes.c_int32)]


class ContextParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("backend", ctypes.c_int), ("num_threads", ctypes.c_int32),
                ("device", ctypes.c_int32), ("stream", ctypes.c_void_p), ("stream_mode", ctypes.c_int)]


_P = ctypes.POINTER
_ctx_t = ctypes.c_void_p
_tensor_t = ctypes.c_char_p  # an rda_tensor passed as its bytes (ops._view); the library only reads it
lib.rda_context_create.argtypes = [_P(ContextParams), _P(_ctx_t)]
lib.rda_context_create.restype = ctypes.c_int
lib.rda_context_destroy.argtypes = [_ctx_t]
lib.rda_context_destroy.restype = None
lib.rda_context_set_stream.argtypes = [_ctx_t, ctypes.c_void_p]
lib.rda_context_set_stream.restype = ctypes.c_int
lib.rda_context_last_error.argtypes = [_ctx_t]
lib.rda_context_last_error.restype = ctypes.c_char_p
lib.rda_status_to_string.argtypes = [ctypes.c_int]
lib.rda_status_to_string.restype = ctypes.c_char_p
lib.rda_cuda_available.argtypes = []
lib.rda_cuda_available.restype = ctypes.c_int
lib.rda_version_string.argtypes = []
lib.rda_version_string.restype = ctypes.c_char_p
lib.rda_attention_forward.argtypes = [_ctx_t, _P(Config)] + [_tensor_t] * 5
lib.rda_attention_forward.restype = ctypes.c_int
lib.rda_attention_backward.argtypes = [_ctx_t, _P(Config)] + [_tensor_t] * 9
lib.rda_attention_backward.restype = ctypes.c_int
lib.rda_ring_partition.argtypes = [ctypes.c_int64, ctypes.c_int32, ctypes.c_int, ctypes.c_int32,
                                   ctypes.c_int64 * 2, ctypes.c_int64 * 2, _P(ctypes.c_int32)]
lib.rda_ring_partition.restype = ctypes.c_int
lib.rda_count_pairs.argtypes = [_P(Config), ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, _P(ctypes.c_int64)]
lib.rda_count_pairs.restype = ctypes.c_int

# ---- rings: communicators and the ring calls
_comm_t = ctypes.c_void_p
START_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32,
                            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32)
WAIT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_double)
VOID_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
NCCL_ID_BYTES = 128


class Callbacks(ctypes.Structure):
    _fields_ = [("start", START_FN), ("wait", WAIT_FN), ("abort", VOID_FN), ("release", VOID_FN),
                ("user", ctypes.c_void_p)]


lib.rda_comm_create_callbacks.argtypes = [_P(Callbacks), ctypes.c_int32, ctypes.c_int32, _P(_comm_t)]
lib.rda_comm_create_callbacks.restype = ctypes.c_int
lib.rda_nccl_unique_id.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
lib.rda_nccl_unique_id.restype = ctypes.c_int
lib.rda_comm_create_nccl_id.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32, ctypes.c_int32,
                                        ctypes.c_int32, ctypes.c_void_p, _P(_comm_t)]
lib.rda_comm_create_nccl_id.restype = ctypes.c_int
lib.rda_comm_destroy.argtypes = [_comm_t]
lib.rda_comm_destroy.restype = None
lib.rda_ring_forward.argtypes = [_ctx_t, _comm_t, _P(Config), ctypes.c_int64] + [_tensor_t] * 5 + [ctypes.c_void_p]
lib.rda_ring_forward.restype = ctypes.c_int
lib.rda_ring_backward.argtypes = [_ctx_t, _comm_t, _P(Config), ctypes.c_int64] + [_tensor_t] * 9 + [ctypes.c_void_p]
lib.rda_ring_backward.restype = ctypes.c_int

# status codes (rda_status) and the Python exception each becomes
_TYPE_ERRORS = {4}            # DTYPE_MISMATCH
_VALUE_ERRORS = {1, 2, 3, 5, 6, 7, 8, 12}  # bad arguments, shapes, patterns, aliasing, unsupported
_MEMORY = {9}


def check(status, ctx):
    if status == 0:
        return
    name = lib.rda_status_to_string(status).decode()
    msg = lib.rda_context_last_error(ctx).decode() if ctx else ""
    text = f"rda: {name}: {msg}" if msg else f"rda: {name}"
    if status in _TYPE_ERRORS:
        raise TypeError(text)
    if status in _VALUE_ERRORS:
        raise ValueError(text)
    if status in _MEMORY:
        raise MemoryError(text)
    raise RuntimeError(text)


class _Context:
    """One rda_context; destroyed with the object."""

    def __init__(self, backend, device=0, stream=None, threads=0):
        p = ContextParams(ctypes.sizeof(ContextParams), backend, threads, device, stream,
                          STREAM_CALLER if backend == BACKEND_CUDA else 0)
        h = _ctx_t()
        check(lib.rda_context_create(ctypes.byref(p), ctypes.byref(h)), None)
        self.handle = h
        self.address = h.value  # (what the calls take: ctypes and _native alike)
        self.stream = stream

    def __del__(self):
        if getattr(self, "handle", None) and lib is not None:
            lib.rda_context_destroy(self.handle)
            self.handle = None


_local = threading.local()


def context(backend, device=0, stream=None, threads=0):
    """The calling thread's context for (backend, device, threads), made on
    first use and kept (a context runs one call at a time); on CUDA switched
    to `stream` when its last call ran on another one, so that one device's
    workspace and tables serve every stream (also a graph's capture stream,
    where nothing may be allocated)."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (backend, device, threads)
    c = cache.get(key)
    if c is None:
        c = cache[key] = _Context(backend, device, stream, threads)
    elif backend == BACKEND_CUDA and c.stream != stream:
        check(lib.rda_context_set_stream(c.address, stream), c.address)
        c.stream = stream
    return c.address


def config(mode, causal, scale, patterns, layout=0, deterministic=False):
    cfg = Config()
    cfg.struct_size = ctypes.sizeof(Config)
    cfg.version = CONFIG_VERSION
    cfg.mode = mode
    cfg.causal = 1 if causal else 0
    cfg.scale = float(scale) if scale else 0.0
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"rda: at most {MAX_PATTERNS} (segment, dilation) patterns (got {len(patterns)})")
    cfg.num_patterns = len(patterns)
    for i, (w, r) in enumerate(patterns):
        cfg.patterns[i].segment = int(w)
        cfg.patterns[i].dilation = int(r)
    cfg.layout = layout
    cfg.deterministic = 1 if deterministic else 0
    cfg.address = ctypes.addressof(cfg)  # (what _native takes; the object stays alive in ops._configs)
    return cfg
