"""`mordasr upscale INPUT... -o OUT_DIR`: super-resolve files and folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import ImageReadError, UnsupportedFormatError, read_image, save_like

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OUTPUT_FORMATS = ("auto", "png", "jpg", "webp", "tif", "bmp")
_SUFFIX_OF_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files named directly, plus every file inside named folders (sorted, not recursive).

    Whether a file is an image is decided by its content when it is read, so nothing is
    filtered by extension here.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file()))
        else:
            files.append(path)
    return files


def output_path(source: Path, out_dir: Path, image_format: str, fmt: str, suffix: str) -> Path:
    """Where the result of ``source`` goes: same stem (+ suffix), format kept unless forced."""
    extension = "." + fmt if fmt != "auto" else _SUFFIX_OF_FORMAT.get(image_format, ".png")
    return out_dir / f"{source.stem}{suffix}{extension}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upscale`` sub-command."""
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images (x4) with the built-in MoR model or another",
        description="Super-resolve image files and folders. Formats are detected from content; "
        "gray stays gray, alpha and 16-bit depth are kept. Existing outputs are never "
        "overwritten without --overwrite; unreadable files are reported and skipped.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    parser.add_argument(
        "--model",
        default="default",
        help="'default', a model folder, a backbone (realesrgan-x4plus, a .pth), or 'bicubic'",
    )
    parser.add_argument("--tile", type=int, default=0, help="input tile side (0: whole image)")
    parser.add_argument("--tile-overlap", type=int, default=32, help="tile overlap in LR pixels")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    sd = parser.add_argument_group("one-step SD models (a folder written by OneStepSR)")
    sd.add_argument(
        "--latent-tile", type=int, default=96, help="UNet latent tile side (0: whole latent)"
    )
    sd.add_argument("--latent-overlap", type=int, default=32, help="latent tile overlap")
    sd.add_argument(
        "--vae-tile", type=int, default=1024, help="VAE tile side in SR pixels (0: untiled)"
    )
    sd.add_argument(
        "--color-fix",
        choices=("wavelet", "adain", "none"),
        default="wavelet",
        help="restore the LR colours (default: wavelet)",
    )
    sd.add_argument("--prompt", default=None, help="a fixed prompt (default: the model's)")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="auto",
        help="output format (default: same as the input)",
    )
    parser.add_argument("--suffix", default="", help="appended to output file stems")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr upscale``; exit status 1 if any input failed."""

    files = collect_inputs(args.inputs)
    try:
        upscaler = Upscaler(
            args.model,
            device=args.device,
            dtype=DTYPES[args.dtype],
            tile=args.tile or None,
            tile_overlap=args.tile_overlap,
            progress=False,
            latent_tile=args.latent_tile,
            latent_overlap=args.latent_overlap,
            vae_tile=args.vae_tile,
            color_fix=args.color_fix,
            prompt=args.prompt,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"mordasr upscale: {error}", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, failed = 0, 0, 0
    for source in tqdm(files, desc="upscale", unit="img", disable=len(files) < 2):
        try:
            decoded = read_image(source)
        except ImageReadError as error:
            tqdm.write(f"skipped {source}: {error}", file=sys.stderr)
            failed += 1
            continue
        target = output_path(source, out_dir, decoded.format, args.format, args.suffix)
        if target.exists() and not args.overwrite:
            tqdm.write(f"skipped {source}: {target} exists (use --overwrite)", file=sys.stderr)
            skipped += 1
            continue
        try:
            result = upscaler.upscale_decoded(decoded)
            save_like(target, result.image, decoded, alpha=result.alpha)
        except (UnsupportedFormatError, OSError, RuntimeError) as error:
            tqdm.write(f"failed {source}: {error}", file=sys.stderr)
            failed += 1
            continue
        done += 1
    print(f"{done} upscaled, {skipped} skipped (exist), {failed} failed -> {out_dir}")
    return 1 if failed else 0
