"""The optional timm backbone: a clear error where timm is not importable."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.timm_backbone import TimmUnavailableError


def test_timm_backbone_without_timm_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, as when absent
    config = BackboneConfig(name="timm", timm_model="resnet18")
    with pytest.raises(TimmUnavailableError, match=r"needs the timm package.*backbone 'vit'"):
        build_backbone(config, (1, 28, 28), seed=0)


def test_timm_backbone_needs_a_model_name():
    with pytest.raises(ValidationError, match="timm_model"):
        BackboneConfig(name="timm")
