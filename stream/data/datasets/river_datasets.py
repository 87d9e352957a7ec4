"""river's datasets as streamcl datasets: ``river:NAME[?KEY=VALUE&...]``.

NAME is one of river's bundled classification datasets that need no download (``Bananas``,
``ImageSegments``, ``Phishing``, ``Shuttle``) or one of its synthetic classification generators
(``Agrawal``, ``Hyperplane``, ``LED``, ``RandomRBF``, ``SEA``, ``ConceptDriftStream``, ...).
The spec string holds everything, so a recorded stream reloads exactly the same data::

    river:Phishing                                   all 1250 samples, every 5th held out
    river:ImageSegments?test_every=0                 no test split: the whole stream is trained on
    river:Agrawal?n=20000&seed=1&classification_function=2
    river:Agrawal?n=20000&seed=1&drift_position=10000&drift_width=500&drift.classification_function=4
    river:RandomRBF?n=5000&n_classes=5&n_features=8&seed=3

Keys (values are JSON scalars, anything else is a string):

- ``n``: samples to take (generators: default 10000; bundled datasets: default all);
- ``test_every``: every k-th sample, in stream order, goes to the test split (default 5; 0 holds
  nothing out). The split is by position, so it is deterministic and spread over the stream;
- ``seed``: for generators, every seed parameter not given by name (``seed``, ``seed_model``,
  ``seed_sample``, ``seed_tree``; default 0), so a spec always names the same samples;
- ``drift_position``, ``drift_width`` and ``drift.<param>``: wrap the generator in river's
  ``ConceptDriftStream``, switching (over a sigmoid ``drift_width`` samples wide) at
  sample ``drift_position`` of the generated sequence to the same generator with ``<param>``
  changed; positions count every generated sample, test ones included. ``drift_width``
  defaults to river's 1000 and must be at least ``4 * drift_position / 700`` (river's sigmoid
  overflows on narrower ones);
- any other key: a constructor parameter of the generator, by its river name.

Bounds, so that a spec (one a recorded stream's header names, say) cannot ask for endless
generation: ``n``, ``test_every``, ``drift_position`` and ``drift_width`` at most
:data:`MAX_SAMPLES` (river generates some 25,000 samples a second: under a minute); seeds in
``[0, 2**32 - 1]`` (numpy's legacy generators take no more); every other integer parameter an
integer in ``[0, MAX_SAMPLES]``; what a generator builds before its first sample (RandomRBF's
centroids, RandomTree's tree) at most :data:`MAX_MODEL_VALUES` values; and the table at most
:data:`MAX_VALUES` values, checked on the first sample's width before the rest is generated.
The bounds on ``n``, ``test_every``, the drift positions and ``seed`` need no river: a stream's
header is held to them when it is read (:func:`check`); the rest when the dataset is built.

Features: each sample's dict becomes one float32 row, in the first sample's key order. bool and
integer features (river encodes the categorical features of Agrawal, LED, STAGGER, ... as
integer codes) become their numeric value; string features, missing values and samples with
different keys are refused with an error naming the feature. Labels: bools become 0/1,
non-negative integers stay as they are, strings become the index of the label in sorted order,
with the labels as class names.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from learners.base import MAX_SEED
from stream.data.datasets.dataset import MAX_CLASSES, Dataset, DatasetError, check_bytes
from stream.data.option_value import option_value

MAX_SAMPLES = 1_000_000
MAX_MODEL_VALUES = 1_000_000
MAX_VALUES = 1 << 28
"""Values (samples x features) a generated table may hold: river makes a few million a second
in Python, so about a minute; one GiB as float32."""
DEFAULT_SAMPLES = 10_000
DEFAULT_TEST_EVERY = 5
DEFAULT_DRIFT_WIDTH = 1000  # river's own default
_EXP_LIMIT = 700.0  # math.exp overflows just above 709.78
_SEED_PARAMS = ("seed", "seed_model", "seed_sample", "seed_tree")
_OWN_KEYS = {"n", "test_every", "seed", "drift_position", "drift_width"}


def load(spec: str, argument: str | None) -> Dataset:
    if not argument:
        raise DatasetError(f"river needs a dataset name: river:NAME, one of {', '.join(names())}")
    name, options = _parsed(spec, argument)
    source, limit = _source(spec, name, options)
    test_every = _int_option(spec, options, "test_every", DEFAULT_TEST_EVERY, minimum=0)
    X, labels = _table(spec, source, limit)
    y, class_names = _class_ids(spec, labels)
    test = np.zeros(len(y), dtype=bool)
    if test_every:
        test[test_every - 1 :: test_every] = True
    return Dataset(
        spec=spec,
        X_train=X[~test],
        y_train=y[~test],
        X_test=X[test],
        y_test=y[test],
        class_names=class_names,
    )


def check(spec: str, argument: str | None) -> None:
    """The bounds of the spec's own options (``n``, ``seed``, ...), checked without river."""
    if argument:
        _, options = _parsed(spec, argument)
        for key, default, minimum in (
            ("n", 1, 1),
            ("test_every", DEFAULT_TEST_EVERY, 0),
            ("drift_position", 1, 1),
            ("drift_width", DEFAULT_DRIFT_WIDTH, 1),
        ):
            _int_option(spec, options, key, default, minimum)
        _seed_option(spec, "seed", options.get("seed", 0))


def names() -> list[str]:
    """The river datasets this loader accepts: bundled ones first, then generators."""
    return _bundled() + _generators()


def _is_classification(dataset_cls: type) -> bool:
    from river.datasets import base

    try:
        task = dataset_cls().task
    except TypeError:
        return False
    return task in (base.BINARY_CLF, base.MULTI_CLF)


@functools.cache
def _bundled() -> list[str]:
    from river import datasets

    return sorted(
        name
        for name in datasets.__all__
        if isinstance(cls := getattr(datasets, name), type)
        and issubclass(cls, datasets.base.FileDataset)
        and not issubclass(cls, datasets.base.RemoteDataset)
        and _is_classification(cls)
    )


@functools.cache
def _generators() -> list[str]:
    from river.datasets import synth

    return sorted(name for name in synth.__all__ if _is_classification(getattr(synth, name)))


def _parsed(spec: str, argument: str) -> tuple[str, dict[str, Any]]:
    name, _, query = argument.partition("?")
    return name, _parse_query(spec, query)


def _parse_query(spec: str, query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DatasetError(
            f"{spec}: options must read KEY=VALUE&KEY=VALUE, got {query!r}"
        ) from None
    for key, raw in pairs:
        if key in options:
            raise DatasetError(f"{spec}: {key} is given twice")
        options[key] = option_value(raw)
    return options


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int_option(
    spec: str,
    options: dict[str, Any],
    key: str,
    default: int,
    minimum: int,
    maximum: int = MAX_SAMPLES,
) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise DatasetError(
            f"{spec}: {key} must be an integer in [{minimum}, {maximum}], got {_short(repr(value))}"
        )
    return value


def _seed_option(spec: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise DatasetError(
            f"{spec}: {key} must be an integer in [0, {MAX_SEED}], got {_short(repr(value))}"
        )
    return value


def _source(spec: str, name: str, options: dict[str, Any]) -> tuple[Any, int | None]:
    """The river dataset object named by the spec, and how many samples to take."""
    from river import datasets
    from river.datasets import synth

    if name in _bundled():
        extra = sorted(set(options) - {"n", "test_every"})
        if extra:
            raise DatasetError(
                f"{spec}: {name} is a fixed dataset; it takes only n and test_every, "
                f"not {', '.join(extra)}"
            )
        limit = _int_option(spec, options, "n", 0, minimum=1) if "n" in options else None
        return getattr(datasets, name)(), limit
    if name not in _generators():
        raise DatasetError(f"{spec}: unknown river dataset {name!r}; known: {', '.join(names())}")
    limit = _int_option(spec, options, "n", DEFAULT_SAMPLES, minimum=1)
    seed = _seed_option(spec, "seed", options.get("seed", 0))
    params = {k: v for k, v in options.items() if k not in _OWN_KEYS and not k.startswith("drift.")}
    generator_cls = getattr(synth, name)
    stream = _generator(spec, generator_cls, params, seed)
    if "drift_position" not in options:
        if "drift_width" in options or any(k.startswith("drift.") for k in options):
            raise DatasetError(f"{spec}: drift options need drift_position")
        return stream, limit
    changed = {k.removeprefix("drift."): v for k, v in options.items() if k.startswith("drift.")}
    drift_stream = _generator(spec, generator_cls, {**params, **changed}, seed)
    position = _int_option(spec, options, "drift_position", 0, minimum=1)
    width = _int_option(spec, options, "drift_width", DEFAULT_DRIFT_WIDTH, minimum=1)
    # ConceptDriftStream computes exp(4 * (position - i) / width), which overflows a float
    # before the drift when the width is too narrow for the position.
    narrowest = math.ceil(4 * (position - 1) / _EXP_LIMIT)
    if width < narrowest:
        raise DatasetError(
            f"{spec}: drift_width must be at least {narrowest} for drift_position {position} "
            "(river's ConceptDriftStream overflows on narrower ones)"
        )
    try:
        drifting = synth.ConceptDriftStream(
            stream, drift_stream, position=position, width=width, seed=seed
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{spec}: {exc}") from None
    return drifting, limit


def _generator(spec: str, cls: type, params: dict[str, Any], seed: int) -> Any:
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise DatasetError(
            f"{spec}: {cls.__name__} has no parameter {', '.join(unknown)}; "
            f"its parameters: {', '.join(accepted)}"
        )
    params = dict(params)
    for key in _SEED_PARAMS:
        if key in accepted and key not in params:
            params[key] = seed
    _check_params(spec, cls, {**_defaults(accepted), **params})
    try:
        return cls(**params)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{spec}: {cls.__name__}({_call(params)}): {exc}") from None


def _defaults(accepted: Any) -> dict[str, Any]:
    return {
        key: parameter.default
        for key, parameter in accepted.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _is_int_parameter(parameter: inspect.Parameter) -> bool:
    """Annotated ``int`` (river's annotations are strings), or unannotated with an int
    default (SEA's ``variant``)."""
    if parameter.annotation is inspect.Parameter.empty:
        return type(parameter.default) is int
    return str(parameter.annotation) in ("int", "int | None", "<class 'int'>")


def _check_params(spec: str, cls: type, params: dict[str, Any]) -> None:
    """Every integer parameter bounded, and what the generator builds before its first sample
    (lists of Python floats, in river) at most :data:`MAX_MODEL_VALUES`."""
    name = cls.__name__
    for key, parameter in inspect.signature(cls).parameters.items():
        if key not in params or not _is_int_parameter(parameter):
            continue
        value = params[key]
        if key in _SEED_PARAMS:
            _seed_option(spec, key, value)
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAMPLES:
            raise DatasetError(
                f"{spec}: {name} parameter {key} must be an integer in [0, {MAX_SAMPLES}], "
                f"got {_short(repr(value))}"
            )
    sizes = _model_values(name, params)
    if sizes is not None and sizes[1] > MAX_MODEL_VALUES:
        raise DatasetError(
            f"{spec}: {name}: {sizes[0]} is {sizes[1]}, more than {MAX_MODEL_VALUES} "
            "(what the generator builds before its first sample)"
        )


def _model_values(name: str, params: dict[str, Any]) -> tuple[str, int] | None:
    """What ``name`` builds up front, in words and values; None for generators that build
    nothing that grows with their parameters."""
    if name == "RandomRBF":
        return "n_centroids x n_features", params["n_centroids"] * params["n_features"]
    if name == "RandomRBFDrift":
        centroids = max(params["n_centroids"], params["n_drift_centroids"])
        return "n_centroids x n_features", centroids * params["n_features"]
    if name == "RandomTree":
        # every split has two children, or one per category when categorical features exist;
        # past 64 levels the tree is over the bound for any branching, so the power stays small
        branching = max(2, params["n_categories_per_feature"] if params["n_cat_features"] else 2)
        nodes = branching ** min(params["max_tree_depth"], 64)
        return "the tree's node count (branching ** max_tree_depth)", nodes
    return None


def _call(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


_CHUNK = 4096


def _table(spec: str, source: Any, limit: int | None) -> tuple[np.ndarray, list[Any]]:
    """The samples as a float32 matrix (first sample's key order) and their labels.

    Rows are packed into float32 every :data:`_CHUNK` samples (a list of Python floats takes
    eight times the room), and the table's size is checked on the first sample's width."""
    chunks: list[np.ndarray] = []
    rows: list[list[float]] = []
    labels: list[Any] = []
    keys: list[Any] | None = None
    for index, (x, y) in enumerate(_samples(spec, source)):
        if limit is not None and index >= limit:
            break
        if keys is None:
            keys = list(x)
            if limit is not None:
                _check_table(spec, limit, len(keys))
        elif len(x) != len(keys) or any(k not in x for k in keys):
            raise DatasetError(
                f"{spec}: sample {index} has features {sorted(map(str, x))}, the first had "
                f"{sorted(map(str, keys))}; sparse or varying features are not supported"
            )
        row = []
        for key in keys:
            value = x[key]
            if not isinstance(value, numbers.Real) or (
                isinstance(value, float) and math.isnan(value)
            ):
                raise DatasetError(
                    f"{spec}: feature {key!r} of sample {index} is {value!r}; streamcl needs "
                    "numeric features (encode strings and fill missing values first)"
                )
            row.append(float(value))
        rows.append(row)
        labels.append(y)
        if len(rows) == _CHUNK:
            chunks.append(np.asarray(rows, dtype=np.float32))
            rows = []
    if rows:
        chunks.append(np.asarray(rows, dtype=np.float32))
    if not chunks:
        raise DatasetError(f"{spec}: the dataset yielded no samples")
    return np.concatenate(chunks), labels


def _samples(spec: str, source: Any) -> Any:
    """``source``'s samples, with what river raises on parameters it accepted but cannot
    generate with said as one error naming the spec."""
    iterator = iter(source)
    while True:
        try:
            sample = next(iterator)
        except StopIteration:
            return
        except (
            ArithmeticError,
            AttributeError,
            IndexError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            raise DatasetError(
                f"{spec}: the generator failed: {type(exc).__name__}: {_short(str(exc), 200)}"
            ) from None
        yield sample


def _check_table(spec: str, samples: int, features: int) -> None:
    if samples * features > MAX_VALUES:
        raise DatasetError(
            f"{spec}: {samples} samples x {features} features is {samples * features} values, "
            f"more than the {MAX_VALUES} a generated table may hold"
        )
    # the table while it is packed, then its train and test splits: two float32 copies
    check_bytes(spec, 2 * 4 * samples * features, f"{samples} samples x {features} features")


def _class_ids(spec: str, labels: list[Any]) -> tuple[np.ndarray, list[str]]:
    kinds = {type(label) for label in labels}
    if kinds <= {bool, np.bool_}:
        y = np.asarray(labels, dtype=np.int64)
        return y, ["False", "True"][: int(y.max()) + 1]
    if all(isinstance(label, numbers.Integral) and not isinstance(label, bool) for label in labels):
        low, high = min(labels), max(labels)
        if low < 0 or high >= MAX_CLASSES:
            raise DatasetError(
                f"{spec}: integer labels must be in [0, {MAX_CLASSES - 1}], got {low} to {high}"
            )
        y = np.asarray(labels, dtype=np.int64)
        return y, [str(c) for c in range(int(y.max()) + 1)]
    if kinds == {str}:
        names = sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[label] for label in labels], dtype=np.int64), names
    raise DatasetError(
        f"{spec}: labels of types {sorted(k.__name__ for k in kinds)} are not supported"
    )
