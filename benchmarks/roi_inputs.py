"""The ROI-proposal benchmark settings and inputs, shared by ``test_bench_propose_rois.py`` and
``gpu_receipts.py``: LLaVA-1.5's 24 x 24 grid (its Table 7 settings, no smoothing) and a
LLaVA-OneVision-sized 114 x 57 local grid (smoothing and downsampling by 2, s_max = 9)."""

import torch

from focus_modules import FocusConfig

SETTINGS = {
    "24x24": ((24, 24), FocusConfig.preset("llava-1.5", dataset="vstar")),
    "114x57": ((114, 57), FocusConfig.preset("llava-onevision", dataset="vstar")),
}


def make_maps(batch, h, w, device):
    """Smooth random maps with a few peaks, each summing to 1 (like relevance maps)."""
    gen = torch.Generator().manual_seed(batch * h)
    maps = torch.nn.functional.avg_pool2d(torch.rand(batch, 1, h, w, generator=gen) ** 8, 3, 1, 1).squeeze(1)
    maps = maps / maps.sum((1, 2), keepdim=True)
    return maps.to(device), torch.tensor([[h, w]] * batch, device=device)


def hyper_parameters(cfg):
    """The proposal keyword arguments of a FocusConfig (all but ``nms_threshold``)."""
    return dict(
        k=cfg.k,
        s_min=cfg.s_min,
        s_max=cfg.s_max,
        s_dist=cfg.s_dist,
        expand_threshold=cfg.expand_threshold,
        smooth_sigma=cfg.smooth_sigma,
        downsample=cfg.downsample,
    )
