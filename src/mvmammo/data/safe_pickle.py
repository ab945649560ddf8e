"""Loading pickled exam lists without running code.

A pickle can call any importable function while it loads. :class:`RestrictedUnpickler` resolves no
global except a fixed allow-list: plain containers and scalars need none at all (they have their own
opcodes); sets, OrderedDict and complex are harmless constructors; numpy arrays, dtypes and numpy scalars
are rebuilt by numpy's own reconstruct helpers, which only make arrays (``_reconstruct`` refuses a
type that is not an ndarray subclass, and no other type can be named). Anything else (a class
instance, ``os.system``, ``builtins.eval``...) stops the load with :class:`UnsafePickleError` before
it is called.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 writes bytes as _codecs.encode(str, 'latin1')
    # numpy 1.x and 2.x spellings of the array / scalar rebuild helpers
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_NUMPY_PREFIX = ("numpy.",)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to something other than plain data; it was not loaded."""


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str = "pickle"):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol <= 2 names the Python 2 module
            module = "builtins"
        if (module, name) in _ALLOWED:
            if module.startswith(_NUMPY_PREFIX) or module == "numpy":
                import numpy  # noqa: F401  (import the real module, never an attacker-named one)
            return super().find_class(module, name)
        # numpy dtype classes (numpy.dtypes.Float64DType...) appear in numpy>=1.25 pickles of dtypes
        if module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier():
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refuses to load: the pickle holds an object of {module}.{name}; only plain "
            "lists, dicts, tuples, strings, numbers and numpy arrays are accepted (loading other objects "
            "could run code). Re-save the exam list with plain Python types.")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refuses to load: persistent ids are not plain data")


def loads(data: bytes, source: str = "pickle"):
    return RestrictedUnpickler(io.BytesIO(data), source=source).load()


def load(path: str | Path):
    """Load a pickle file holding only plain data; UnsafePickleError otherwise."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
