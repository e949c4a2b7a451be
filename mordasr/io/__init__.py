"""Image reading and writing that keeps what the input had (gray, alpha, 16-bit, EXIF, ICC).

- :mod:`~mordasr.io.image` — read/write by content, :class:`~mordasr.io.image.LoadedImage`.
- :mod:`~mordasr.io.png16` — 16-bit PNG decoding and encoding that Pillow lacks.
- :mod:`~mordasr.io.paths` — input scanning and output planning that never replaces an input.
"""
