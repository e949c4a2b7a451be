"""Integrations with other tools (the top layer: it uses all of mordasr, nothing uses it).

- :mod:`~mordasr.integrations.comfyui` — ComfyUI nodes; :mod:`~mordasr.integrations.comfyui_node`
  is the folder to link into ``ComfyUI/custom_nodes``.
"""
