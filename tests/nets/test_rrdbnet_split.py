"""RRDBNet's split forward (head, body segments, reconstruct) equals the plain forward."""

from __future__ import annotations

import torch

from mordasr.nets.rrdbnet import RRDBNet


def test_running_the_body_in_two_segments_equals_the_full_forward() -> None:
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=3, num_grow_ch=4).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        feat = net.head(x)
        cached = net.run_body(feat, 0, 2)
        split = net.reconstruct(feat, net.run_body(cached, 2))
        torch.testing.assert_close(split, net(x), atol=0, rtol=0)
