"""Sealed pickles (learners/state/sealed_pickle.py): digest, HMAC and the restricted unpickler."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
from river import drift, forest, linear_model, naive_bayes, neighbors, preprocessing, tree
from river.datasets import Phishing

from learners.state.sealed_pickle import SealError, seal, unseal
from tests.support.checkpoint_gadgets import CountingServer, download_gadget, system_gadget


def digest_meta(data: bytes) -> dict[str, str]:
    """What anyone can produce: a matching digest (the key guards the checkpoint file)."""
    return {"format": "streamcl-sealed-pickle-2", "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize(
    "model",
    [
        tree.HoeffdingAdaptiveTreeClassifier(seed=1),
        forest.ARFClassifier(n_models=2, seed=1),
        preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
        naive_bayes.GaussianNB(),
        neighbors.KNNClassifier(),
        tree.ExtremelyFastDecisionTreeClassifier(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_trained_river_models_pass_the_restricted_unpickler(model):
    for x, y in list(Phishing())[:200]:
        model.learn_one(x, y)
    data, meta = seal(model)
    restored = unseal(data, meta)
    probe = next(iter(Phishing()))[0]
    assert restored.predict_proba_one(probe) == model.predict_proba_one(probe)


@pytest.mark.parametrize(
    "make",
    [drift.ADWIN, drift.PageHinkley, lambda: drift.KSWIN(seed=1), drift.binary.DDM],
    ids=["ADWIN", "PageHinkley", "KSWIN", "DDM"],
)
def test_drift_detector_state_round_trips(make):
    detector = make()
    for i in range(500):
        detector.update(float(i % 7 == 0))
    restored = unseal(*seal(detector))
    for i in range(500, 3000):
        value = float(i % 7 == 0 if i < 1500 else i % 2 == 0)
        detector.update(value)
        restored.update(value)
        assert restored.drift_detected == detector.drift_detected


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(Exploit()),
        pickle.dumps(eval),
        # A dotted name walks attributes: river.datasets.base imports os.
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x13river.datasets.base\x8c\tos.system\x93.",
    ],
    ids=["os.system", "builtins.eval", "river-module-os"],
)
def test_forbidden_globals_are_refused_even_with_a_valid_digest(payload):
    with pytest.raises(SealError, match="forbidden global"):
        unseal(payload, digest_meta(payload))


class Method:
    def __reduce__(self):
        # getattr(<a river class>, "download"): a function reached through getattr.
        from river.datasets.base import RemoteDataset

        return (getattr, (RemoteDataset, "download"))


def test_river_functions_are_refused(tmp_path):
    target = tmp_path / "evil.pth"
    with CountingServer() as server:
        gadget = download_gadget(server.url, target)
        # the gadget works where it is not refused
        assert b"RemoteDataset.download" in gadget
        with pytest.raises(SealError, match=r"forbidden global river\.datasets\.base"):
            unseal(gadget, digest_meta(gadget))
        assert server.requests == 0
    assert not target.exists()
    drawn = pickle.dumps(tree.HoeffdingTreeClassifier.draw, protocol=5)
    for payload in (pickle.dumps(Method(), protocol=5), drawn, system_gadget(target)):
        with pytest.raises(SealError):
            unseal(payload, digest_meta(payload))
    assert not target.exists()


def test_a_function_of_a_module_allowed_for_classes_is_refused():
    from river.utils.math import softmax

    payload = pickle.dumps(softmax, protocol=5)
    with pytest.raises(SealError, match=r"forbidden global river\.utils\.math\.softmax"):
        unseal(payload, digest_meta(payload))


def test_damage_is_detected_before_unpickling():
    data, meta = seal({"weights": [1.0, 2.0]})
    with pytest.raises(SealError, match="damaged"):
        unseal(data[:-1] + b"\x00", meta)
    with pytest.raises(SealError, match="not a sealed pickle"):
        unseal(data, {**meta, "format": "other"})


class Bomb:
    """376 bytes of pickle that asked for list(range(150_000_000)): 6 GB."""

    def __reduce__(self):
        return (list, (range(150_000_000),))


class Buffer:
    def __reduce__(self):
        return (bytearray, (10**12,))


@pytest.mark.parametrize(
    "payload, message",
    [
        (pickle.dumps([Bomb()], protocol=5), "forbidden global builtins.range"),
        (pickle.dumps(Buffer(), protocol=5), "bytearray of size 1000000000000"),
    ],
    ids=["list-of-range", "bytearray-of-size"],
)
def test_constructors_that_allocate_what_the_pickle_names_are_refused(payload, message):
    """A second fence: the key is what keeps such bytes out (stream/runs/served_model.py)."""
    with pytest.raises(SealError, match=message):
        unseal(payload, digest_meta(payload))
    data = bytearray(b"from data")
    assert unseal(*seal({"raw": data, "b": bytes(data)})) == {"raw": data, "b": b"from data"}
