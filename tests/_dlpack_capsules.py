"""DLPack capsules built by hand (ctypes), for tests of ropescale's DLPack reader.

A real exporter (NumPy, torch) only makes well-formed tensors; these let a
test hand ropescale any field values: NULL data, negative or huge shapes and
strides, foreign devices, dtypes, versions, flags.  The structures follow
dlpack.h (v0.8 ``DLManagedTensor`` and v1.x ``DLManagedTensorVersioned``);
the capsule has no destructor, and the deleter records its calls, so a test
can see whether the tensor was handed back and how often.
"""
import ctypes

import numpy as np


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


READ_ONLY = 1
# (DLPack type code, bits) of each NumPy dtype the reader maps.
CODES = {np.dtype(np.float16): (2, 16), np.dtype(np.float32): (2, 32), np.dtype(np.float64): (2, 64),
         np.dtype(np.int8): (0, 8), np.dtype(np.int16): (0, 16), np.dtype(np.int32): (0, 32),
         np.dtype(np.int64): (0, 64), np.dtype(np.uint8): (1, 8), np.dtype(np.uint16): (1, 16),
         np.dtype(np.uint32): (1, 32), np.dtype(np.uint64): (1, 64), np.dtype(np.bool_): (6, 8)}

_NAMES = {False: ctypes.create_string_buffer(b"dltensor"), True: ctypes.create_string_buffer(b"dltensor_versioned")}
# Capsules are made through CPython's C API; PyPy's ctypes has no pythonapi, so
# there the module imports (Exporter objects can still be built) but no capsule
# can be made, and the tests that need one skip on AVAILABLE.
AVAILABLE = hasattr(ctypes, "pythonapi")
WHY_NOT = "hand-made DLPack capsules need ctypes.pythonapi, which only CPython has"
if AVAILABLE:
    _capsule_new = ctypes.pythonapi.PyCapsule_New
    _capsule_new.restype = ctypes.py_object
    _capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    _capsule_name = ctypes.pythonapi.PyCapsule_GetName
    _capsule_name.restype = ctypes.c_char_p
    _capsule_name.argtypes = [ctypes.py_object]


def capsule_name(cap) -> str:
    return _capsule_name(cap).decode()


class Capsule:
    """One hand-made tensor: its fields, the memory they point at, the capsule, and the deleter's calls.

    ``data`` is an address (int), ``None`` for NULL, or a NumPy array whose
    memory is used (and kept alive here).  ``shape``/``strides`` are lists
    (``None`` for a NULL pointer; ``strides`` in elements, as DLPack has them).
    """

    def __init__(self, *, data=None, shape=(), strides=None, code=2, bits=32, lanes=1, device=1, ndim=None,
                 byte_offset=0, versioned=False, version=(1, 0), flags=0, shape_null=False):
        self.deleted = 0
        self.keep = []
        if isinstance(data, np.ndarray):
            self.keep.append(data)
            address = data.ctypes.data
        else:
            address = data
        t = DLTensor()
        t.data = address
        t.device = DLDevice(device, 0)
        t.ndim = len(shape) if ndim is None else ndim
        t.dtype = DLDataType(code, bits, lanes)
        if shape_null:
            t.shape = ctypes.POINTER(ctypes.c_int64)()
        else:
            sh = (ctypes.c_int64 * max(len(shape), 1))(*shape)
            self.keep.append(sh)
            t.shape = ctypes.cast(sh, ctypes.POINTER(ctypes.c_int64))
        if strides is None:
            t.strides = ctypes.POINTER(ctypes.c_int64)()
        else:
            st = (ctypes.c_int64 * max(len(strides), 1))(*strides)
            self.keep.append(st)
            t.strides = ctypes.cast(st, ctypes.POINTER(ctypes.c_int64))
        t.byte_offset = byte_offset

        def deleter(_ptr):
            self.deleted += 1

        self._deleter = DELETER(deleter)
        if versioned:
            m = DLManagedTensorVersioned()
            m.version = DLPackVersion(*version)
            m.flags = flags
            m.dl_tensor = t
        else:
            m = DLManagedTensor()
            m.dl_tensor = t
        m.manager_ctx = None
        m.deleter = self._deleter
        self.managed = m
        self.versioned = versioned
        self.capsule = _capsule_new(ctypes.addressof(m), _NAMES[versioned], None)

    @property
    def consumed(self) -> bool:
        return capsule_name(self.capsule).startswith("used_")


class Exporter:
    """An object that speaks DLPack and hands out one prepared capsule (or raises what it is told to)."""

    def __init__(self, capsule=None, device=(1, 0), dlpack_error=None, device_error=None, takes_max_version=True):
        self.capsule, self.device = capsule, device
        self.dlpack_error, self.device_error = dlpack_error, device_error
        self.takes_max_version = takes_max_version
        self.calls = []

    def __dlpack__(self, **kw):
        self.calls.append(kw)
        if kw and not self.takes_max_version:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        if self.dlpack_error is not None:
            raise self.dlpack_error
        return self.capsule.capsule

    def __dlpack_device__(self):
        if self.device_error is not None:
            raise self.device_error
        return self.device


def of_array(a: np.ndarray, **kw) -> Capsule:
    """A capsule of ``a``'s memory with its shape and strides (in elements)."""
    code, bits = CODES[a.dtype.newbyteorder("=")]
    strides = [s // a.itemsize for s in a.strides] if kw.pop("explicit_strides", True) else None
    return Capsule(data=a, shape=list(a.shape), strides=strides, code=code, bits=bits, **kw)
