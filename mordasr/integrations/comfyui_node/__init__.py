"""The ComfyUI custom-node package of mordasr: link this folder into ``ComfyUI/custom_nodes``.

ComfyUI imports every folder there as a package (under the folder's name, not as part of
``mordasr``) and reads its ``NODE_CLASS_MAPPINGS``; the nodes live in
:mod:`mordasr.integrations.comfyui`, imported absolutely so the link works under any name.
"""

from mordasr.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
