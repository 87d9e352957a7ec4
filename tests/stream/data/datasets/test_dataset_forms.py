"""The dataset specs an error lists are the ones each dataset takes (docs/datasets.md)."""

import re
from pathlib import Path

import pytest

from stream.data.datasets import (
    DatasetError,
    check_spec,
    dataset_forms,
    dataset_names,
    load_dataset,
)

DOCS = Path(__file__).resolve().parents[4] / "docs" / "datasets.md"


def test_the_unknown_dataset_error_lists_each_form_exactly():
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist")
    message = str(error.value)
    listed = message.split("known: ", 1)[1].split(", ")
    assert listed == dataset_forms()
    assert "digits" in listed and "cifar100:DIR" in listed and "npz:PATH" in listed
    assert "[:ARG]" not in message


def test_every_form_is_the_one_docs_datasets_md_gives():
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOCS.read_text(encoding="utf-8"), re.M))
    assert set(dataset_forms()) <= documented
    assert [re.split(r"[\[:]", f, maxsplit=1)[0] for f in dataset_forms()] == dataset_names()


@pytest.mark.parametrize("form", [f for f in dataset_forms() if ":" in f and "[:" not in f])
def test_a_required_argument_is_required(form):
    with pytest.raises(DatasetError, match="needs"):
        load_dataset(form.split(":", 1)[0])


@pytest.mark.parametrize("form", [f for f in dataset_forms() if ":" not in f])
def test_an_argument_where_none_is_taken_is_refused(form):
    """digits:anything loaded digits and ignored the rest (a recorded stream named it so)."""
    for check in (load_dataset, check_spec):  # check_spec: what a stream header is held to
        with pytest.raises(DatasetError, match=f"dataset {form} takes no argument, got '{form}:x'"):
            check(f"{form}:x")
