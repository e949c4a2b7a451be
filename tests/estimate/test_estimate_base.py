"""Eq. 7-8 scoring helper and the shared interface constants."""

from __future__ import annotations

import pytest
import torch

from mordasr.estimate import DIMENSIONS, TABLE3_PROMPTS, prompt_pair_scores


def test_dimensions_follow_table_3_order():
    table3 = "overall_quality blurriness noise resolution edge_clarity clarity details"
    assert tuple(table3.split()) == DIMENSIONS
    assert list(TABLE3_PROMPTS) == list(DIMENSIONS)
    assert TABLE3_PROMPTS["blurriness"] == ("Sharp Image", "Blurry Image")


def test_score_is_softmax_probability_of_the_negative_cosine():
    generator = torch.Generator().manual_seed(0)
    image, pos, neg = (torch.randn(n, 8, generator=generator) for n in (3, 7, 7))
    scores = prompt_pair_scores(image, pos, neg)
    cos = torch.nn.functional.cosine_similarity
    d_p = cos(image[:, None], pos[None], dim=-1)
    d_n = cos(image[:, None], neg[None], dim=-1)
    torch.testing.assert_close(scores, d_n.exp() / (d_p.exp() + d_n.exp()))


def test_swapping_prompts_complements_the_score():
    generator = torch.Generator().manual_seed(1)
    image, pos, neg = (torch.randn(n, 8, generator=generator) for n in (2, 7, 7))
    total = prompt_pair_scores(image, pos, neg) + prompt_pair_scores(image, neg, pos)
    torch.testing.assert_close(total, torch.ones(2, 7))


def test_image_aligned_with_negative_prompt_scores_high_and_scale_sharpens_it():
    neg = torch.eye(7, 8)
    pos = torch.roll(neg, 1, dims=1)
    image = neg[:1]
    plain = prompt_pair_scores(image, pos, neg)[0, 0]
    scaled = prompt_pair_scores(image, pos, neg, logit_scale=100.0)[0, 0]
    assert 0.5 < plain < scaled
    assert scaled == pytest.approx(1.0, abs=1e-6)
