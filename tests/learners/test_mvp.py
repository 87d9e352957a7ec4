"""MVP: each component checked by its effect (prompting, masks, AFS, GSF, seen classes, ...)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.pretrain import save_backbone
from learners.base import Problem
from learners.mvp import MVP, MVPConfig, feature_scale, focal_weights, gradient_dissimilarity
from learners.registry import LearnerConfigError, create

PROBLEM = Problem(input_shape=(1, 8, 8), num_classes=(4,))
TINY = {
    "backbone": {
        "name": "vit",
        "freeze": True,
        "vit": {"patch_size": 4, "embed_dim": 8, "depth": 3, "num_heads": 2},
    },
    "pool_size": 3,
    "g_prompt_layers": [0],
    "g_prompt_length": 2,
    "e_prompt_layers": [1, 2],
    "e_prompt_length": 3,
}


@pytest.fixture(scope="module", autouse=True)
def tiny_weights(tmp_path_factory):
    """The tiny ViT's own seeded initialisation as its weights file: these tests check MVP's
    mechanics, which need a frozen ViT (MVP refuses one without weights), not a good one."""
    config = BackboneConfig.model_validate({**TINY["backbone"], "freeze": False})
    backbone = build_backbone(config, PROBLEM.input_shape, seed=0)
    path = save_backbone(backbone, config, tmp_path_factory.mktemp("vit") / "tiny.safetensors")
    TINY["backbone"]["weights"] = str(path)
    yield path
    del TINY["backbone"]["weights"]


def mvp(**options) -> MVP:
    learner = create("mvp", PROBLEM, {**TINY, **options})
    assert isinstance(learner, MVP)
    return learner


def batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n, 1, 8, 8, generator=g),
        torch.arange(n) % 4,
        torch.zeros(n, dtype=torch.long),
    )


def test_defaults_follow_the_official_script():
    config = MVPConfig.model_construct()  # the defaults alone do not validate: no weights
    assert config.backbone.name == "vit" and config.backbone.freeze
    assert (config.g_prompt_layers, config.g_prompt_length) == ([0, 1], 5)
    assert (config.e_prompt_layers, config.e_prompt_length) == ([2, 3, 4], 20)
    assert (config.alpha, config.gamma, config.margin) == (0.5, 2.0, 0.5)
    assert config.memory.capacity == 0 and config.lr == 5e-3
    assert all((config.use_mask, config.use_contrastive, config.use_afs, config.use_gsf))


def test_a_frozen_vit_without_weights_is_refused_in_one_line_naming_the_fix():
    frozen = {key: value for key, value in TINY["backbone"].items() if key != "weights"}
    with pytest.raises(LearnerConfigError) as refused:
        create("mvp", PROBLEM, {**TINY, "backbone": frozen})
    message = str(refused.value)
    assert "\n" not in message
    assert "backbone.weights" in message and "streamcl pretrain" in message
    with pytest.raises(LearnerConfigError, match=r"backbone\.weights"):
        create("mvp", PROBLEM)  # the defaults: a frozen vit, no weights
    tuned = create("mvp", PROBLEM, {**TINY, "backbone": {**frozen, "freeze": False}})
    assert any(p.requires_grad for p in tuned.vit.parameters())


def test_config_needs_a_vit_with_the_prompt_layers():
    with pytest.raises(LearnerConfigError, match=r"backbone\.name 'vit'"):
        create("mvp", PROBLEM, {"backbone": {"name": "mlp"}})
    with pytest.raises(LearnerConfigError, match="e_prompt_layers"):
        create("mvp", PROBLEM, {**TINY, "e_prompt_layers": [1, 3]})


def test_selected_prompts_change_the_feature_and_others_do_not():
    learner = mvp()
    x, _, _ = batch(1)
    index = torch.tensor([1])
    before = learner.prompted_features(x, index)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        learner.pool.e_prompts[0] += torch.randn(6, 8, generator=g)  # not selected
    assert torch.equal(learner.prompted_features(x, index), before)
    with torch.no_grad():
        learner.pool.e_prompts[1] += torch.randn(6, 8, generator=g)  # selected
    after_e = learner.prompted_features(x, index)
    assert not torch.allclose(after_e, before)
    with torch.no_grad():
        learner.pool.g_prompts += torch.randn(2, 8, generator=g)
    assert not torch.allclose(learner.prompted_features(x, index), after_e)


def test_query_is_the_unprompted_cls_before_the_last_block():
    learner = mvp()
    x, _, _ = batch(2)
    tokens = learner.vit.embed(x)
    for block in learner.vit.blocks[:-1]:
        tokens = block(tokens)
    assert torch.allclose(learner.query(x), tokens[:, 0])
    with torch.no_grad():
        learner.pool.e_prompts.normal_()
        learner.pool.g_prompts.normal_()
    assert torch.allclose(learner.query(x), tokens[:, 0])


def test_logit_mask_scales_the_logits_by_two_sigmoid():
    learner = mvp()
    x, _, _ = batch(4)
    learner.seen[0][:] = True
    _, index = learner._select(x)
    with torch.no_grad():
        learner.pool.masks[0][index[0], 2] = -30.0  # 2·sigmoid(-30) ≈ 0: class 2 logit -> 0
    features = learner.prompted_features(x, index)
    raw = learner.heads[0](features)
    scores = learner.predict(x)
    expected = raw * 2 * torch.sigmoid(learner.pool.masks[0][index])
    torch.testing.assert_close(scores, expected)
    assert abs(float(scores[0, 2])) < 1e-9
    unmasked = mvp(use_mask=False)
    unmasked.seen[0][:] = True
    _, index = unmasked._select(x)
    torch.testing.assert_close(
        unmasked.predict(x), unmasked.heads[0](unmasked.prompted_features(x, index))
    )


def test_seen_class_masking():
    learner = mvp()
    x, _, level = batch(4)
    learner.learn(x, torch.tensor([0, 3, 0, 3]), level)
    scores = learner.predict(x)
    assert torch.isinf(scores[:, [1, 2]]).all() and torch.isfinite(scores[:, [0, 3]]).all()


def test_adaptive_feature_scaling_uses_margin_one_half():
    w = torch.tensor([[1.0, 0.0]])
    features = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    divisor = feature_scale(features, w.expand(3, 2), margin=0.5)
    torch.testing.assert_close(divisor, torch.tensor([0.5, 1.5, 2.5]))


def test_afs_divides_the_feature_before_the_head():
    learner = mvp(use_gsf=False)
    x, y, _ = batch(4)
    learner.seen[0][:] = True
    _, index = learner._select(x)
    features = learner.prompted_features(x, index).detach()
    head = learner.heads[0]
    divisor = 1 - F.cosine_similarity(head.weight[y], features, dim=1) + 0.5
    logits = head(features / divisor.unsqueeze(1)) * learner.pool.logit_mask(index)
    expected = F.cross_entropy(logits, y, reduction="sum")
    torch.testing.assert_close(learner.classification_loss(features, y, index, 0), expected)
    without = mvp(use_gsf=False, use_afs=False)
    without.load_state_dict(learner.state_dict())
    assert not torch.allclose(without.classification_loss(features, y, index, 0), expected)


def test_gradient_dissimilarity_matches_autograd_per_sample():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    weight = torch.randn(4, 5, generator=g, requires_grad=True)
    bias, scale = torch.randn(4, generator=g), torch.rand(6, 4, generator=g) * 2
    seen = torch.tensor([0.0, 0.0, 0.0, float("-inf")])
    logits = (features @ weight.T + bias) * scale + seen
    losses = F.cross_entropy(logits, y, reduction="none")
    own = [torch.autograd.grad(losses[i], weight, retain_graph=True)[0][y[i]] for i in range(6)]
    mean = torch.autograd.grad(losses.mean(), weight)[0]
    expected = torch.stack([1 - F.cosine_similarity(own[i], mean[y[i]], dim=0) for i in range(6)])
    torch.testing.assert_close(
        gradient_dissimilarity(features, y, logits.detach(), scale), expected
    )


def test_focal_weights_are_per_sample_and_downweight_samples_that_agree_with_the_batch():
    # Class 0: three samples along e1 (the majority direction) and one along -e1 (an outlier).
    features = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    logits, scale = torch.zeros(6, 2), torch.ones(6, 2)
    weights = focal_weights(gradient_dissimilarity(features, y, logits, scale), 0.5, 2.0)
    # majority: ign ≈ 0, weight ≈ (1-α) = 0.5; outlier: ign ≈ 1.7, weight ≈ (1-α)+α·ign² ≈ 2
    assert (weights[:3] < 0.6).all() and weights[3] > 1.9
    assert torch.all(weights[:3] == weights[0])
    assert focal_weights(torch.tensor([0.0, 1.0, 2.0]), 0.5, 2.0).tolist() == [0.5, 1.0, 2.5]


def test_gsf_loss_weights_each_sample_not_the_batch_mean():
    learner = mvp(use_afs=False)
    x, y, _ = batch(6, seed=4)
    learner.seen[0][:] = True
    _, index = learner._select(x)
    features = learner.prompted_features(x, index).detach()
    logits = learner.heads[0](features) * learner.pool.logit_mask(index)
    ce = F.cross_entropy(logits, y, reduction="none")
    w = focal_weights(
        gradient_dissimilarity(features, y, logits.detach(), learner.pool.logit_mask(index)),
        0.5,
        2.0,
    )
    loss = learner.classification_loss(features, y, index, 0)
    torch.testing.assert_close(loss, (w * ce).sum())
    official_collapsed = w.mean() * ce.mean() * len(y)
    assert w.std() > 0.05 and not torch.allclose(loss, official_collapsed, rtol=1e-3)


def test_online_iter_repeats_update_steps_and_key_counts():
    learner = mvp()
    x, y, level = batch(6)
    learner.learn(x, y, level, iterations=3)
    assert float(learner.pool.count.sum()) == 18
    step = next(iter(learner.optimizer.state.values()))["step"]
    assert int(step) == 3
    learner.learn(x, y, level, iterations=0)
    assert float(learner.pool.count.sum()) == 18 and learner.seen[0].all()


def test_vit_stays_frozen_while_prompts_keys_masks_and_head_learn():
    learner = mvp()
    vit_before = {k: v.clone() for k, v in learner.vit.state_dict().items()}
    pool_before = {k: v.clone() for k, v in learner.pool.state_dict().items()}
    head_before = learner.heads[0].weight.clone()
    x, y, level = batch(6)
    learner.learn(x, y, level, iterations=2)
    assert all(torch.equal(v, learner.vit.state_dict()[k]) for k, v in vit_before.items())
    for name in ("keys", "g_prompts", "e_prompts", "masks.0"):
        assert not torch.equal(pool_before[name], learner.pool.state_dict()[name]), name
    assert not torch.equal(head_before, learner.heads[0].weight)


def test_replay_memory_is_optional_and_off_by_default():
    learner = mvp()
    x, y, level = batch(6)
    learner.learn(x, y, level)
    learner.learn(x, y, level)
    assert learner.memory_samples == 0 and float(learner.pool.count.sum()) == 12
    replaying = mvp(memory={"capacity": 10}, replay_batch_size=4)
    replaying.learn(x, y, level)
    replaying.learn(x, y, level)
    assert replaying.memory_samples == 10
    assert float(replaying.pool.count.sum()) == 6 + (6 + 4)  # second step: 6 stream + 4 replayed


def test_memory_policies_and_retrieval_plug_in():
    learner = mvp(memory={"capacity": 5, "policy": "clib", "retrieval": "nearest"})
    for seed in range(3):
        learner.learn(*batch(4, seed))
    assert learner.memory_samples == 5
