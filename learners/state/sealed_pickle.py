"""Sealed pickles, for state that exists only as Python objects (river models, drift detectors).

streamcl checkpoints hold tensors (safetensors) and JSON. A river model has no such form: it
is a graph of Python objects whose only serialisation is pickle, and unpickling runs code the
pickle names. So a river object travels *sealed*:

- ``seal`` pickles the object and records the SHA-256 digest of the bytes in the JSON metadata;
- ``unseal`` refuses bytes whose digest does not match (damage), then unpickles with an
  unpickler that resolves only *classes* (river's own, outside its I/O modules
  ``river.datasets``, ``river.stream`` and ``river.api``; a few builtins, ``collections`` and
  numpy types) and a fixed list of named functions river models are pickled with (numpy's
  array constructors, ``copy.deepcopy``, a distance and a factory of river's). No other
  function resolves: not river's dataset downloaders, not ``os.system``. ``getattr`` resolves
  to a guard that hands out only the bound methods river models keep as attributes (a
  ``PageHinkley``'s test), of instances of allowed classes.

The digest detects accidents, not attacks: anyone who can write the bytes can recompute it. The
trust boundary is the file the state came in: the daemon, ``streamcl predict`` and ``streamcl
export`` load a checkpoint that holds sealed pickles only after the HMAC over the whole file
verified under the checkpoint key they were given, and an exported model only after the HMAC
of its bytes in its sidecar did (stream/runs/served_model.py). The allow-list is a second
fence, not a sandbox: it resolves no constructor that turns a few bytes of pickle into an
unbounded allocation (``range``; ``bytes`` and ``bytearray`` of a size), but a pickle can
still copy what it built, so memory is bounded only by the trust boundary.

>>> data, meta = seal({"a": 1})
>>> unseal(data, meta)
{'a': 1}
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
from typing import Any

FORMAT = "streamcl-sealed-pickle-2"

# Classes a river object's pickle may name outside river (found by pickling river's trees,
# linear models, naive Bayes, forests, ensembles, neighbours and drift detectors).
_ALLOWED_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            ("builtins", name)
            for name in (
                "bool",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "object",
                "set",
                "slice",
                "str",
                "tuple",
            )
        ),
        ("collections", "Counter"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("functools", "partial"),
        ("random", "Random"),
    }
)
_NUMPY_CLASSES = frozenset(
    {"ndarray", "dtype", "MT19937", "PCG64", "RandomState", "Generator", "BitGenerator"}
)
# The only functions that resolve, by exact module and name: each builds a value from data.
_ALLOWED_FUNCTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("copy", "deepcopy"),
        ("river._river_rust.vectordict", "euclidean_distance_tuple"),
        ("river.naive_bayes.gaussian", "GaussianNB._make_gaussian"),
        *(
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")),
        *(
            ("numpy.random._pickle", name)
            for name in ("__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor")
        ),
    }
)
# Bound methods a river object keeps as an attribute, by the class that defines them.
_ALLOWED_METHODS: dict[str, frozenset[str]] = {
    "river.drift.page_hinkley.PageHinkley": frozenset({"_test_up", "_test_down", "_test_both"}),
}
_RIVER_IO_MODULES = ("river.datasets", "river.stream", "river.api")


class SealError(ValueError):
    """Sealed bytes that fail their integrity check or name a forbidden global."""


def seal(obj: Any) -> tuple[bytes, dict[str, str]]:
    """Pickle ``obj``; return the bytes and the JSON metadata that vouches for them."""
    data = pickle.dumps(obj, protocol=5)
    return data, {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest()}


def unseal(data: bytes, meta: dict[str, Any]) -> Any:
    """Verify ``data`` against ``meta``, then unpickle it restrictedly."""
    if meta.get("format") != FORMAT:
        raise SealError(f"not a sealed pickle (format {meta.get('format')!r}, expected {FORMAT!r})")
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, str(meta.get("sha256", ""))):
        raise SealError("sealed pickle is damaged: its SHA-256 digest does not match")
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except SealError:
        raise
    except Exception as exc:  # a malformed pickle fails in many ways; all mean "unusable"
        raise SealError(f"sealed pickle does not load: {type(exc).__name__}: {exc}") from None


def holds_sealed_pickles(state: Any) -> bool:
    """Whether a JSON-like state (a checkpoint's metadata) carries sealed pickle metadata."""
    if isinstance(state, dict):
        return state.get("format") == FORMAT or any(holds_sealed_pickles(v) for v in state.values())
    if isinstance(state, list):
        return any(holds_sealed_pickles(v) for v in state)
    return False


def _in_river(module: str) -> bool:
    return (module == "river" or module.startswith("river.")) and not any(
        module == io_module or module.startswith(io_module + ".") for io_module in _RIVER_IO_MODULES
    )


def _allowed_class(obj: Any) -> bool:
    return isinstance(obj, type) and _in_river(getattr(obj, "__module__", "") or "")


def _guarded_getattr(obj: Any, name: str) -> Any:
    """``getattr`` for a pickle: only a listed bound method of an instance of an allowed class."""
    cls = type(obj)
    allowed = _ALLOWED_METHODS.get(f"{cls.__module__}.{cls.__qualname__}", frozenset())
    if isinstance(obj, type) or not _allowed_class(cls) or name not in allowed:
        raise SealError(f"sealed pickle asks for attribute {name!r} of a {cls.__qualname__}")
    return getattr(obj, name)


def _bytes_of_data(cls: type[bytes] | type[bytearray]) -> Any:
    """``bytes`` or ``bytearray`` for a pickle: built from data the pickle holds, never of a
    size it names (``bytearray(10**12)`` is a terabyte from 20 bytes of pickle)."""

    def build(*args: Any) -> bytes | bytearray:
        if args and isinstance(args[0], int):
            raise SealError(f"sealed pickle asks for {cls.__name__} of size {args[0]}")
        return cls(*args)

    return build


_GUARDED: dict[tuple[str, str], Any] = {
    ("builtins", "getattr"): _guarded_getattr,
    ("builtins", "bytes"): _bytes_of_data(bytes),
    ("builtins", "bytearray"): _bytes_of_data(bytearray),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CLASSES or (module, name) in _ALLOWED_FUNCTIONS:
            return super().find_class(module, name)
        if (module, name) in _GUARDED:
            return _GUARDED[(module, name)]
        if (module == "numpy" or module.startswith("numpy.")) and name in _NUMPY_CLASSES:
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
        if _in_river(module) and "." not in name:
            # Resolved only for its check: a river module may import anything (os), and a
            # name that is not a class defined in river (a function, a module) is refused.
            obj = super().find_class(module, name)
            if _allowed_class(obj):
                return obj
        raise SealError(f"sealed pickle names a forbidden global {module}.{name}")
