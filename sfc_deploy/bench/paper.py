"""Figures reported in the paper (Tables 2, 3, 6), shown beside ours so a user can compare.

Keys are (backbone, strategy, tau, split, theta_kernel); values are (GMACs, params in millions or None).
"""

from __future__ import annotations

PAPER_RAW_FRAMES = 288
PAPER_SIZE = (256, 312)

PAPER: dict[tuple[str, str, float, str, str], tuple[float, float | None]] = {
    ("slow8x8", "dense", 0, "", ""): (1643, 32.5),
    ("slow16x4", "dense", 0, "", ""): (3285, 32.5),
    ("slow32x2", "dense", 0, "", ""): (6570, 32.4),
    ("slow8x8", "sfc", 2.0, "res3", "3x1x1"): (247, 35.93),
    ("slow8x8", "sfc", 1.0, "res3", "3x1x1"): (352, None),
    ("slow8x8", "sfc", 4 / 3, "res3", "3x1x1"): (299, None),
    ("slow8x8", "sfc", 4.0, "res3", "3x1x1"): (195, None),
    ("slow8x8", "sfc", 2.0, "res4", "3x1x1"): (305, None),
    ("slow8x8", "sfc", 2.0, "res2", "3x1x1"): (211, None),
    ("slow8x8", "sfc", 2.0, "stem", "3x1x1"): (163, None),
    ("slow8x8", "sfc", 2.0, "res3", "3x3x3"): (356, 48.52),
    ("slow8x8", "sfc", 2.0, "res3", "1x1x1"): (238, 34.89),
    ("slow16x4", "sfc", 2.0, "res3", "3x1x1"): (494, 35.9),
    ("slow32x2", "sfc", 2.0, "res3", "3x1x1"): (988, 35.9),
}


def paper_figure(
    backbone: str, strategy: str, *, tau: float = 0, split: str = "", theta_kernel: str = "", raw_frames: int, size
) -> tuple[float, float | None] | None:
    """The paper's (GMACs, params M) for this setting, or None when the paper has no such row."""
    if raw_frames != PAPER_RAW_FRAMES or (strategy == "sfc" and tuple(size) != PAPER_SIZE):
        return None
    key = (backbone, strategy, 0, "", "") if strategy == "dense" else (backbone, strategy, tau, split, theta_kernel)
    for k, v in PAPER.items():
        if k[:2] == key[:2] and abs(k[2] - key[2]) < 1e-6 and k[3:] == key[3:]:
            return v
    return None
