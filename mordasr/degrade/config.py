"""Settings of the two-stage (second-order) degradation model, of the single-factor
degradations, and the named presets.

Presets side by side (values a preset does not list are the Real-ESRGAN ones; ``[a, b]`` is a
uniform range; BasicSR option names in brackets):

======================================  ==================  ============  ==============
setting                                 ``realesrgan``      ``mordasr-``  ``mordasr-``
                                                            ``mild``      ``severe``
======================================  ==================  ============  ==============
stage 1 kernels (kernel_list/prob)      6 types, .45 .25    same          same
                                        .12 .03 .12 .03
stage 1 sinc prob (sinc_prob)           0.1                 same          same
stage 1 kernel size (sizes 7..max)      21                  same          same
stage 1 sigma (blur_sigma)              [0.2, 3]            same          same
stage 1 beta_g / beta_p                 [0.5, 4] / [1, 2]   same          same
stage 1 resize up/down/keep             .2 .7 .1            same          same
stage 1 resize range                    [0.15, 1.5]         same          same
stage 1 Gaussian noise prob             0.5                 same          same
stage 1 noise sigma (noise_range)       [1, 30]             **[1, 15]**   [1, 30]
stage 1 Poisson scale                   [0.05, 3]           **[0.05, 1]** [0.05, 3]
stage 1 gray noise prob                 0.4                 same          same
stage 1 JPEG quality (jpeg_range)       [30, 95]            **[60, 95]**  [30, 95]
stage 2 blur prob (second_blur_prob)    0.8                 **0.5**       0.8
stage 2 kernel size (blur_kernel_size2) 21                  **11**        21
stage 2 sigma (blur_sigma2)             [0.2, 1.5]          **[0.2, 1]**  [0.2, 1.5]
stage 2 beta_g (betag_range2)           [0.5, 4]            **[0.5, 2]**  [0.5, 4]
stage 2 beta_p (betap_range2)           [1, 2]              **[1, 1.5]**  [1, 2]
stage 2 resize up/down/keep             .3 .4 .3            same          same
stage 2 resize range                    [0.3, 1.2]          same          same
stage 2 noise sigma (noise_range2)      [1, 25]             **[1, 12]**   [1, 25]
stage 2 Poisson scale                   [0.05, 2.5]         **[0.05, 1]** [0.05, 2.5]
stage 2 JPEG quality (jpeg_range2)      [30, 95]            **[60, 100]** [30, 95]
final sinc prob (final_sinc_prob)       0.8                 same          same
sinc-before-JPEG prob                   0.5                 same          same
unsharp-masked GT / degrade USM input   yes / yes           no / no       no / no
======================================  ==================  ============  ==============

``realesrgan`` is the degradation block of BasicSR's ``train_realesrnet_x4plus.yml`` (same
for ``train_realesrgan_x4plus.yml``). The two MoR-DASR presets are Table 4 of the MoR-DASR paper
appendix ("Degradation 1" = mild, "Degradation 2" = severe). Reading of the OCR text: the table
lists exactly the eleven rows in bold above (noise range, Poisson scale range, JPEG range,
second blur prob, noise range2 -- printed "Noise range?2" --, Poisson scale range2, JPEG range2,
blur kernel size2, blur sigma2, betag range2, betap range2) with values Degradation 1 / 2:
[1,15]/[1,30], [0.05,1]/[0.05,3], [60,95]/[30,95], 0.5/0.8, [1,12]/[1,25], [0.05,1]/[0.05,2.5],
[60,100]/[30,95], 11/21, [0.2,1.0]/[0.2,1.5], [0.5,2.0]/[0.5,4.0], [1,1.5]/[1,2]. Degradation 2
therefore equals the Real-ESRGAN values for every listed row. The paper says training follows
SeeSR, whose Real-ESRGAN pipeline config disables unsharp masking (``use_sharp: False``), so
both MoR-DASR presets leave the ground truth and the degradation input unsharpened; everything
the table does not list is taken from Real-ESRGAN. "Blur kernel size2" is read as the largest
kernel of the second stage: sizes are drawn from the odd values 7..11 (BasicSR draws 7..21 and
ignores ``blur_kernel_size``).

Single-factor presets (:class:`SingleFactorConfig`, applied by :mod:`mordasr.degrade.single`):
bicubic downscaling by the scale (no antialiasing), then at most one degradation at a level
drawn per image; the LR image is quantised to 8-bit levels after each step and the ground truth
is the HR image. They isolate one factor each, e.g. to train or test per degradation group:

===============  ==============================================================================
preset           LR image
===============  ==============================================================================
``bicubic``      bicubic downscaling only
``blur-only``    then an isotropic Gaussian blur (kernel 13), sigma ~ U[1, 2] LR pixels
``noise-only``   then colour Gaussian noise, sigma ~ U[10, 30] 8-bit levels
``jpeg-only``    then JPEG at a quality ~ U{15, ..., 40}
===============  ==============================================================================

and one composite (:class:`SplitConfig`), two presets side by side in every image:

===================  ==========================================================================
preset               LR image
===================  ==========================================================================
``mordasr-halves``   ``mordasr-mild`` on one side of a column, ``mordasr-severe`` on the other;
                     the column ~ U[1/4, 3/4] of the width and the mild side drawn per image
===================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from mordasr.degrade.kernels import KERNEL_TYPES

RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
"""Interpolation modes, numbered 0, 1, 2 in that order (PyTorch semantics, no antialias)."""


@dataclass(frozen=True)
class StageConfig:
    """One blur -> resize -> noise -> JPEG stage; each choice is drawn per image.

    Attributes:
        blur_prob: probability the stage blurs at all (1 for stage 1, ``second_blur_prob``).
        kernel_list: kernel types (names of ``KERNEL_TYPES``) to draw from.
        kernel_prob: probability of each entry of ``kernel_list``.
        sinc_prob: probability of a sinc kernel instead of ``kernel_list``.
        kernel_size: largest kernel; sizes are drawn uniformly from the odd values 7..kernel_size.
        blur_sigma: range of sigma_x and sigma_y (pixels).
        betag_range: shape range of generalized Gaussian kernels.
        betap_range: shape range of plateau kernels.
        resize_prob: probabilities of scaling up, down, or keeping the size.
        resize_range: (smallest down factor, largest up factor).
        resize_modes: interpolation modes drawn uniformly.
        gaussian_noise_prob: probability of Gaussian (else Poisson) noise.
        noise_range: Gaussian noise sigma range in 8-bit levels (0..255 scale).
        poisson_scale_range: multiplier range of the Poisson noise.
        gray_noise_prob: probability that the noise is the same in all three channels.
        jpeg_range: JPEG quality range (drawn uniformly, rounded to an integer).
    """

    blur_prob: float = 1.0
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    kernel_size: int = 21
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def __post_init__(self) -> None:
        unknown = set(self.kernel_list) - set(KERNEL_TYPES)
        if unknown:
            raise ValueError(f"unknown kernel types {sorted(unknown)}; known: {KERNEL_TYPES}")
        if len(self.kernel_prob) != len(self.kernel_list):
            raise ValueError("kernel_prob needs one probability per kernel_list entry")
        if self.kernel_size < 7 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and >= 7")
        if set(self.resize_modes) - set(RESIZE_MODES):
            raise ValueError(f"resize_modes must be among {RESIZE_MODES}")


_STAGE2_REALESRGAN = StageConfig(
    blur_prob=0.8,
    blur_sigma=(0.2, 1.5),
    resize_prob=(0.3, 0.4, 0.3),
    resize_range=(0.3, 1.2),
    noise_range=(1.0, 25.0),
    poisson_scale_range=(0.05, 2.5),
)


@dataclass(frozen=True)
class DegradationConfig:
    """The full second-order degradation model (Real-ESRGAN), see the module table for presets.

    Attributes:
        stage1: first blur/resize/noise/JPEG stage, applied to the HR image.
        stage2: second stage; it resizes to ``HR size / scale * factor``.
        final_sinc_prob: probability of a final sinc filter (else identity).
        final_sinc_kernel_size: largest final sinc kernel (sizes drawn from odd 7..max).
        sinc_first_prob: probability that [resize to the LR size + sinc] comes before the final
            JPEG of stage 2 (else JPEG first, then resize + sinc).
        final_resize_modes: interpolation modes drawn for the resize to the LR size.
        gt_usm: return the unsharp-masked HR as ground truth.
        degrade_usm: degrade the unsharp-masked HR rather than the HR (Real-ESRGAN does).
        usm_radius: unsharp-mask Gaussian window (made odd; sigma from OpenCV's rule, 8 for 50).
        usm_weight: weight of the high-pass residual added back.
        usm_threshold: residual magnitude (8-bit levels) below which nothing is sharpened.
    """

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=lambda: _STAGE2_REALESRGAN)
    final_sinc_prob: float = 0.8
    final_sinc_kernel_size: int = 21
    sinc_first_prob: float = 0.5
    final_resize_modes: tuple[str, ...] = RESIZE_MODES
    gt_usm: bool = True
    degrade_usm: bool = True
    usm_radius: int = 50
    usm_weight: float = 0.5
    usm_threshold: float = 10.0


REALESRGAN = DegradationConfig()

MORDASR_MILD = DegradationConfig(
    stage1=replace(
        REALESRGAN.stage1,
        noise_range=(1.0, 15.0),
        poisson_scale_range=(0.05, 1.0),
        jpeg_range=(60.0, 95.0),
    ),
    stage2=replace(
        REALESRGAN.stage2,
        blur_prob=0.5,
        kernel_size=11,
        blur_sigma=(0.2, 1.0),
        betag_range=(0.5, 2.0),
        betap_range=(1.0, 1.5),
        noise_range=(1.0, 12.0),
        poisson_scale_range=(0.05, 1.0),
        jpeg_range=(60.0, 100.0),
    ),
    gt_usm=False,
    degrade_usm=False,
)

MORDASR_SEVERE = replace(REALESRGAN, gt_usm=False, degrade_usm=False)

Factor = Literal["none", "blur", "noise", "jpeg"]
FACTORS: tuple[Factor, ...] = ("none", "blur", "noise", "jpeg")

BLUR_SIGMA = (1.0, 2.0)
"""Range of the ``blur-only`` preset's Gaussian sigma, in LR pixels."""
BLUR_KERNEL = 13
"""Blur kernel size of the single-factor blur: +-3 sigma at the largest sigma."""
NOISE_SIGMA = (10.0, 30.0)
"""Range of the ``noise-only`` preset's Gaussian sigma, in 8-bit levels."""
JPEG_QUALITY = (15, 40)
"""Range of the ``jpeg-only`` preset's quality (integers, both ends included)."""


@dataclass(frozen=True)
class SingleFactorConfig:
    """Bicubic downscaling, then one degradation factor at a level drawn per image.

    Attributes:
        factor: ``"none"`` (downscaling only), ``"blur"`` (isotropic Gaussian blur, sigma in LR
            pixels), ``"noise"`` (colour Gaussian noise, sigma in 8-bit levels) or ``"jpeg"``
            (JPEG quality).
        level: range the level is drawn from uniformly (for ``"jpeg"`` an integer, both ends
            included); unused for ``"none"``.
        kernel_size: the blur kernel's size (odd).
    """

    factor: Factor = "none"
    level: tuple[float, float] = (0.0, 0.0)
    kernel_size: int = BLUR_KERNEL

    def __post_init__(self) -> None:
        if self.factor not in FACTORS:
            raise ValueError(f"unknown factor {self.factor!r}; known: {FACTORS}")
        if self.level[0] > self.level[1]:
            raise ValueError(f"level range {self.level} is empty")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and positive")


@dataclass(frozen=True)
class SplitConfig:
    """Two presets side by side: each image is degraded by both, and the columns left of a
    split drawn per image come from one, the rest from the other (which one is drawn too).
    Training crops then hold a degradation border, as regions of real photos do (region
    routing, :mod:`mordasr.sr.regions`).

    Attributes:
        first, second: the two presets (names of non-composite :data:`PRESETS`).
        split: range the split column is drawn from, as a fraction of the LR width.
    """

    first: str = "mordasr-mild"
    second: str = "mordasr-severe"
    split: tuple[float, float] = (0.25, 0.75)

    def __post_init__(self) -> None:
        if not 0.0 <= self.split[0] <= self.split[1] <= 1.0:
            raise ValueError(f"split range {self.split} must lie in [0, 1], low end first")


Config = DegradationConfig | SingleFactorConfig | SplitConfig
"""Any kind of degradation configuration."""

PRESETS: dict[str, Config] = {
    "realesrgan": REALESRGAN,
    "mordasr-mild": MORDASR_MILD,
    "mordasr-severe": MORDASR_SEVERE,
    "bicubic": SingleFactorConfig("none"),
    "blur-only": SingleFactorConfig("blur", BLUR_SIGMA),
    "noise-only": SingleFactorConfig("noise", NOISE_SIGMA),
    "jpeg-only": SingleFactorConfig("jpeg", (float(JPEG_QUALITY[0]), float(JPEG_QUALITY[1]))),
    "mordasr-halves": SplitConfig(),
}
"""Named configurations: see the tables in this module's docstring."""


def resolve_config(config: Config | str) -> Config:
    """Return ``config`` itself or the preset of that name."""
    if isinstance(config, DegradationConfig | SingleFactorConfig | SplitConfig):
        return config
    try:
        return PRESETS[config]
    except KeyError:
        raise ValueError(f"unknown preset {config!r}; known: {sorted(PRESETS)}") from None
