"""Offline pretrained backbones: safe loading, layout conversion and published weight values."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mordasr.nets.alexnet import AlexNetFeatures
from mordasr.nets.pretrained import (
    NumpyOnlyUnpickler,
    PretrainedWeightsMissingError,
    dists_alpha_beta,
    flax_conv_to_torch,
    lpips_linear_weights,
    lpips_reference_linear_weights,
    niqe_pristine_params,
    package_dir,
)
from mordasr.nets.vgg import VGG16Features, imagenet_normalize


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    return VGG16Features.from_pretrained()


@pytest.fixture(scope="module")
def alexnet() -> AlexNetFeatures:
    return AlexNetFeatures.from_pretrained()


def _unpickle(payload: bytes) -> object:
    return NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_unpickler_round_trips_nested_numeric_arrays() -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [1, 2.5]}
    restored = _unpickle(pickle.dumps(tree))
    np.testing.assert_array_equal(restored["a"]["kernel"], tree["a"]["kernel"])
    assert restored["b"] == [1, 2.5]


def test_unpickler_refuses_arbitrary_callables() -> None:
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _unpickle(pickle.dumps(os.getcwd))


def test_unpickler_refuses_object_arrays() -> None:
    with pytest.raises(pickle.UnpicklingError, match="object dtype"):
        _unpickle(pickle.dumps(np.array([1, "x"], dtype=object)))


def test_missing_weight_package_names_the_fetch_command_and_the_folder_variable() -> None:
    with pytest.raises(
        PretrainedWeightsMissingError, match=r"mordasr weights fetch.*MORDASR_WEIGHTS"
    ):
        package_dir("mordasr_no_such_weight_package", "no-such-package")


def test_flax_kernel_conversion_matches_flax_cross_correlation() -> None:
    """Independent numpy reference: flax computes out[o,y,x] = sum in[i,y+h,x+w] K[h,w,i,o]."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)  # H != W exposes a swap
    image = rng.standard_normal((4, 7, 6)).astype(np.float32)
    expected = np.zeros((5, 5, 5), dtype=np.float64)
    for y in range(5):
        for x in range(5):
            patch = image[:, y : y + 3, x : x + 2]
            expected[:, y, x] = np.einsum("ihw,hwio->o", patch, kernel)
    weight = flax_conv_to_torch(kernel)["weight"]
    actual = F.conv2d(torch.from_numpy(image)[None], weight)[0].numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_vgg16_state_dict_uses_torchvision_keys(vgg: VGG16Features) -> None:
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = [f"features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")]
    assert list(vgg.state_dict()) == expected


def test_alexnet_state_dict_uses_torchvision_keys(alexnet: AlexNetFeatures) -> None:
    expected = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")]
    assert list(alexnet.state_dict()) == expected


def test_vgg16_first_filter_equals_published_torchvision_weights(vgg: VGG16Features) -> None:
    """Values printed from torchvision's ImageNet ``vgg16(pretrained=True).features[0]`` (public
    printouts of the state dict); an H/W swap would transpose the asymmetric 3x3 filter."""
    published_weight = torch.tensor(
        [[-0.5537, 0.1427, 0.5290], [-0.5831, 0.3566, 0.7657], [-0.6902, -0.0480, 0.4841]]
    )
    published_last = torch.tensor(
        [[0.4603, 0.4340, 0.2835], [0.1634, -0.0582, -0.1920], [-0.1952, -0.4563, -0.4273]]
    )
    published_bias = torch.tensor([0.4034, 0.3778, 0.4644, -0.3228, 0.3940, -0.3953, 0.3951])
    conv = vgg.features[0]
    torch.testing.assert_close(conv.weight[0, 0], published_weight, atol=6e-5, rtol=0)
    torch.testing.assert_close(conv.weight[-1, 2], published_last, atol=6e-5, rtol=0)
    torch.testing.assert_close(conv.bias[:7], published_bias, atol=6e-5, rtol=0)


def test_vgg16_second_conv_equals_published_torchvision_weights(vgg: VGG16Features) -> None:
    published_row = torch.tensor([-3.0606e-02, -9.8520e-02, -1.3260e-01])
    published_bias = torch.tensor([0.0020, -0.0902, 0.6164, -0.0818])
    torch.testing.assert_close(vgg.features[2].weight[0, 0, 0], published_row, atol=6e-6, rtol=0)
    torch.testing.assert_close(vgg.features[2].bias[:4], published_bias, atol=6e-5, rtol=0)


def test_alexnet_first_filter_row_equals_published_torchvision_weights(
    alexnet: AlexNetFeatures,
) -> None:
    """First row of torchvision ``alexnet(pretrained=True)`` ``features.0.weight[0, 0]`` as
    printed publicly (first three and last three of its 11 entries)."""
    row = alexnet.features[0].weight[0, 0, 0]
    torch.testing.assert_close(
        row[:3], torch.tensor([1.1864e-01, 9.4069e-02, 9.5435e-02]), atol=6e-6, rtol=0
    )
    torch.testing.assert_close(
        row[-3:], torch.tensor([5.5822e-02, 2.1575e-02, 4.9963e-02]), atol=6e-6, rtol=0
    )


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_linear_layers_equal_the_authors_v01_release(net: str) -> None:
    ours = lpips_linear_weights(net)  # type: ignore[arg-type]
    reference = lpips_reference_linear_weights(net)  # type: ignore[arg-type]
    for mine, theirs in zip(ours, reference, strict=True):
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0)


def test_vgg16_returns_requested_layers_at_expected_scales(vgg: VGG16Features) -> None:
    x = imagenet_normalize(torch.rand(1, 3, 32, 48))
    out = vgg(x, layers=("relu5_3", "relu1_2"))
    assert list(out) == ["relu5_3", "relu1_2"]
    assert out["relu1_2"].shape == (1, 64, 32, 48)
    assert out["relu5_3"].shape == (1, 512, 2, 3)
    assert all(bool((t >= 0).all()) for t in out.values())


def test_alexnet_returns_five_relu_layers(alexnet: AlexNetFeatures) -> None:
    out = alexnet(torch.rand(1, 3, 64, 64))
    assert [t.shape[1] for t in out.values()] == [64, 192, 384, 256, 256]


def test_unknown_layer_name_is_rejected(vgg: VGG16Features) -> None:
    with pytest.raises(ValueError, match="unknown layers"):
        vgg(torch.rand(1, 3, 8, 8), layers=("relu9_9",))


def test_pretrained_backbones_are_frozen_and_in_eval_mode(vgg: VGG16Features) -> None:
    assert not vgg.training
    assert not any(p.requires_grad for p in vgg.parameters())


def test_imagenet_normalize_maps_the_mean_colour_to_zero() -> None:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert imagenet_normalize(mean).abs().max() < 1e-6


def test_dists_weights_have_one_entry_per_feature_channel() -> None:
    alpha, beta = dists_alpha_beta()
    assert alpha.shape == beta.shape == (1, 3 + 64 + 128 + 256 + 512 + 512, 1, 1)


def test_niqe_pristine_model_has_36_features() -> None:
    params = niqe_pristine_params()
    assert params["mu_pris_param"].shape == (1, 36)
    assert params["cov_pris_param"].shape == (36, 36)
    np.testing.assert_allclose(params["gaussian_window"].sum(), 1.0, atol=1e-6)
