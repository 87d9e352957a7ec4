"""Integrity-checked pickles, for state that exists only as Python objects (river models).

streamcl checkpoints hold tensors (safetensors) and JSON. A river model has no such form: it
is a graph of Python objects whose only serialisation is pickle, and unpickling runs code the
pickle names. So a river model travels *sealed*:

- ``seal`` pickles the object and records, in the JSON metadata, the SHA-256 digest of the
  bytes and, when a key is given, their HMAC-SHA256 under that key;
- ``unseal`` refuses bytes whose digest does not match (a damaged or truncated checkpoint) and,
  when a key is given, bytes without a valid HMAC (a checkpoint not written by a holder of the
  key); only then does it unpickle, with an unpickler that resolves nothing but river's own
  classes and functions, numpy's array constructors and a short list of builtins and
  ``collections`` types.

The trust boundary: without a key, the digest detects accidents, not attacks — anyone who can
write the checkpoint can recompute it. Load only checkpoints you wrote, or configure a key
(given to the daemon at the edge, from its config or environment) so that a checkpoint forged
without the key is refused before a single byte is unpickled. The restricted unpickler narrows
what a pickle can call; it is a second fence, not a sandbox (see docs/river.md).

>>> data, meta = seal({"a": 1}, key=b"secret")
>>> unseal(data, meta, key=b"secret")
{'a': 1}
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
from typing import Any

FORMAT = "streamcl-sealed-pickle-1"

# Globals a river model's pickle may name outside river itself (found by pickling river's
# trees, linear models, naive Bayes, forests, ensembles, neighbours and drift detectors).
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            ("builtins", name)
            for name in (
                "bool",
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "object",
                "range",
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
        ("copy", "deepcopy"),
        ("copyreg", "_reconstructor"),
        ("functools", "partial"),
        ("random", "Random"),
    }
)
_NUMPY_NAMES = frozenset(
    {
        "_reconstruct",
        "ndarray",
        "dtype",
        "scalar",
        "_frombuffer",
        "__randomstate_ctor",
        "__bit_generator_ctor",
        "__generator_ctor",
        "MT19937",
        "PCG64",
        "RandomState",
        "Generator",
    }
)


class SealError(ValueError):
    """Sealed bytes that fail their integrity check or name a forbidden global."""


def seal(obj: Any, key: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """Pickle ``obj``; return the bytes and the JSON metadata that vouches for them."""
    data = pickle.dumps(obj, protocol=5)
    meta = {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest()}
    if key:
        meta["hmac_sha256"] = hmac.new(key, data, hashlib.sha256).hexdigest()
    return data, meta


def unseal(data: bytes, meta: dict[str, Any], key: bytes | None = None) -> Any:
    """Verify ``data`` against ``meta`` (and ``key``), then unpickle it restrictedly."""
    if meta.get("format") != FORMAT:
        raise SealError(f"not a sealed pickle (format {meta.get('format')!r}, expected {FORMAT!r})")
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, str(meta.get("sha256", ""))):
        raise SealError("sealed pickle is damaged: its SHA-256 digest does not match")
    signature = meta.get("hmac_sha256")
    if key:
        if signature is None:
            raise SealError("sealed pickle is unsigned but a checkpoint key is configured")
        expected = hmac.new(key, data, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature)):
            raise SealError("sealed pickle was not signed with the configured checkpoint key")
    elif signature is not None:
        raise SealError("sealed pickle is signed; configure its checkpoint key to load it")
    return _RestrictedUnpickler(io.BytesIO(data)).load()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module == "numpy" or module.startswith("numpy.")) and name in _NUMPY_NAMES:
            return super().find_class(module, name)
        if module == "river" or module.startswith("river."):
            obj = super().find_class(module, name)
            # A dotted name walks attributes, so check where the object found is defined:
            # ``river.x`` may have imported ``os``, and ``("river.x", "os.system")`` must fail.
            defined_in = getattr(obj, "__module__", None) or ""
            if defined_in == "river" or defined_in.startswith("river."):
                return obj
        raise SealError(f"sealed pickle names a forbidden global {module}.{name}")
