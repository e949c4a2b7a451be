"""`mordasr serve`: a local web page to upload, upscale with progress and compare before/after.

- :mod:`~mordasr.serve.jobs` — the job queue: uploads checked by content, one worker thread.
- :mod:`~mordasr.serve.app` — the FastAPI app (needs the ``web`` extra).
- :mod:`~mordasr.serve.guard` — Host, Origin, token and size checks before any route runs.
- :mod:`~mordasr.serve.cli` — the ``serve`` sub-command.

The page (``static/``) is plain HTML, CSS and JavaScript served by the app itself: no CDN.
"""
