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

from stream.data.datasets.dataset import Dataset, DatasetError
from stream.data.option_value import option_value

DEFAULT_SAMPLES = 10_000
DEFAULT_TEST_EVERY = 5
DEFAULT_DRIFT_WIDTH = 1000  # river's own default
_EXP_LIMIT = 700.0  # math.exp overflows just above 709.78
_SEED_PARAMS = ("seed", "seed_model", "seed_sample", "seed_tree")
_OWN_KEYS = {"n", "test_every", "seed", "drift_position", "drift_width"}


def load(spec: str, argument: str | None) -> Dataset:
    if not argument:
        raise DatasetError(f"river needs a dataset name: river:NAME, one of {', '.join(names())}")
    name, _, query = argument.partition("?")
    options = _parse_query(spec, query)
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


def _int_option(spec: str, options: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(f"{spec}: {key} must be an integer >= {minimum}, got {value!r}")
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
    seed = options.get("seed", 0)
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


def _generator(spec: str, cls: type, params: dict[str, Any], seed: Any) -> Any:
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
    try:
        return cls(**params)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{spec}: {cls.__name__}({_call(params)}): {exc}") from None


def _call(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _table(spec: str, source: Any, limit: int | None) -> tuple[np.ndarray, list[Any]]:
    """The samples as a float32 matrix (first sample's key order) and their labels."""
    rows: list[list[float]] = []
    labels: list[Any] = []
    keys: list[Any] | None = None
    for index, (x, y) in enumerate(source):
        if limit is not None and index >= limit:
            break
        if keys is None:
            keys = list(x)
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
    if not rows:
        raise DatasetError(f"{spec}: the dataset yielded no samples")
    return np.asarray(rows, dtype=np.float32), labels


def _class_ids(spec: str, labels: list[Any]) -> tuple[np.ndarray, list[str]]:
    kinds = {type(label) for label in labels}
    if kinds <= {bool, np.bool_}:
        y = np.asarray(labels, dtype=np.int64)
        return y, ["False", "True"][: int(y.max()) + 1]
    if all(isinstance(label, numbers.Integral) and not isinstance(label, bool) for label in labels):
        y = np.asarray(labels, dtype=np.int64)
        if y.min() < 0:
            raise DatasetError(f"{spec}: negative integer labels are not supported")
        return y, [str(c) for c in range(int(y.max()) + 1)]
    if kinds == {str}:
        names = sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[label] for label in labels], dtype=np.int64), names
    raise DatasetError(
        f"{spec}: labels of types {sorted(k.__name__ for k in kinds)} are not supported"
    )
