"""The CAD networks (docs/ARCHITECTURE.md, "CAD"). Only ``lungviewer.cad`` imports torch, and this
module is imported lazily (by the engine's worker thread and the trainer), never by the
viewer's first frame.

Multi-task nodule network with partial soft parameter sharing: two task columns
(task A: malignancy level 1–5; task B: disease class or a LIDC rating). conv1 and conv2
are per task and never shared; after each pooling stage the two columns' feature maps
are linearly combined with a learned 2×2 mixing matrix (cross-stitch), and in the FC
stage each head reads the concatenation of both columns' flattened features ("concat &
flatten"). Baselines: ``hard`` (one trunk, two heads), ``soft`` (two separate columns
with an L2 penalty tying their weights, :meth:`MultiTaskNet.l2_tie`), ``single`` (one
column, one head; train one per task).

Input: (n, 2, 32, 32) — the nodule patch, binary and grey — plus (n, 2) box size in mm.

Nodule detector (nodule vs non-nodule), exactly: 50×50 → conv 32@5×5 same → maxpool 2 →
conv 64@5×5 → conv 64@3×3 → maxpool 2 → FC 512 → dropout 0.5 → 2 logits. The 512-d
penultimate features are the similar-nodule embedding.

Slice recommendation head: transferred from the detector (its trunk, frozen, and
its penultimate features) with a new 3-way head: no nodule / benign / malignant.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SCHEMES = ("partial", "hard", "soft", "single")


class _Column(nn.Module):
    def __init__(self, in_ch: int, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)

    def stage1(self, x):
        return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # 32 -> 16

    def stage2(self, x):
        return F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # 16 -> 8


class CrossStitch(nn.Module):
    """Learned linear combination of two columns' features (initialised near identity)."""

    def __init__(self, keep: float = 0.9) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([[keep, 1 - keep], [1 - keep, keep]]))

    def forward(self, a, b):
        return (self.alpha[0, 0] * a + self.alpha[0, 1] * b,
                self.alpha[1, 0] * a + self.alpha[1, 1] * b)


class MultiTaskNet(nn.Module):
    def __init__(self, scheme: str = "partial", n_classes: tuple[int, int] = (5, 3),
                 in_ch: int = 2, n_extra: int = 2, hidden: int = 64) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"unknown sharing scheme {scheme!r}; choose from {SCHEMES}")
        self.scheme = scheme
        self.n_classes = tuple(n_classes)
        self.n_extra = n_extra
        flat = 32 * 8 * 8 + n_extra
        if scheme == "hard":
            self.trunk = _Column(in_ch)
            self.fc = nn.Linear(flat, hidden)
            self.heads = nn.ModuleList([nn.Linear(hidden, n) for n in n_classes])
        elif scheme == "single":
            self.col_a = _Column(in_ch)
            self.fc_a = nn.Linear(flat, hidden)
            self.heads = nn.ModuleList([nn.Linear(hidden, n_classes[0])])
        else:
            self.col_a, self.col_b = _Column(in_ch), _Column(in_ch)
            self.fc_a, self.fc_b = nn.Linear(flat, hidden), nn.Linear(flat, hidden)
            if scheme == "partial":
                self.mix1, self.mix2 = CrossStitch(), CrossStitch()
                self.heads = nn.ModuleList([nn.Linear(2 * hidden, n) for n in n_classes])
            else:
                self.heads = nn.ModuleList([nn.Linear(hidden, n) for n in n_classes])
        self.dropout = nn.Dropout(0.3)

    @staticmethod
    def _flat(x, extra):
        x = torch.flatten(x, 1)
        return torch.cat([x, extra], 1) if extra is not None else x

    def forward(self, x, extra=None):
        """Logits of task A (and task B, except for ``single``)."""
        if extra is not None and self.n_extra:
            extra = torch.log1p(extra) / 4.0  # box size in mm, compressed
        if self.scheme == "hard":
            h = self.trunk.stage2(self.trunk.stage1(x))
            f = self.dropout(F.relu(self.fc(self._flat(h, extra))))
            return tuple(head(f) for head in self.heads)
        if self.scheme == "single":
            h = self.col_a.stage2(self.col_a.stage1(x))
            f = self.dropout(F.relu(self.fc_a(self._flat(h, extra))))
            return (self.heads[0](f),)
        a, b = self.col_a.stage1(x), self.col_b.stage1(x)
        if self.scheme == "partial":
            a, b = self.mix1(a, b)
        a, b = self.col_a.stage2(a), self.col_b.stage2(b)
        if self.scheme == "partial":
            a, b = self.mix2(a, b)
        fa = self.dropout(F.relu(self.fc_a(self._flat(a, extra))))
        fb = self.dropout(F.relu(self.fc_b(self._flat(b, extra))))
        if self.scheme == "partial":
            f = torch.cat([fa, fb], 1)  # concat & flatten: each head sees both columns
            return self.heads[0](f), self.heads[1](f)
        return self.heads[0](fa), self.heads[1](fb)

    def l2_tie(self) -> torch.Tensor:
        """Soft sharing penalty: squared distance between the two columns' weights."""
        if self.scheme != "soft":
            return torch.zeros(())
        pa = list(self.col_a.parameters()) + list(self.fc_a.parameters())
        pb = list(self.col_b.parameters()) + list(self.fc_b.parameters())
        return sum(((p - q) ** 2).sum() for p, q in zip(pa, pb))


class NoduleDetector(nn.Module):
    """The nodule detector, as the paper describes it (50×50 grey patch → 2 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 12 * 12, 512)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(512, 2)

    def trunk(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 50 -> 25
        x = F.relu(self.conv3(F.relu(self.conv2(x))))
        return F.max_pool2d(x, 2)  # 25 -> 12

    def embed(self, x):
        """The 512-d penultimate features (the similar-nodule embedding)."""
        return F.relu(self.fc(torch.flatten(self.trunk(x), 1)))

    def forward(self, x):
        return self.out(self.dropout(self.embed(x)))


class SliceHead(nn.Module):
    """Slice recommendation: a 3-way head (no nodule / benign / malignant) on the
    detector's transferred 512-d features; the detector trunk stays frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(512, 64)
        self.out = nn.Linear(64, 3)

    def forward(self, features):
        return self.out(F.relu(self.fc(features)))


class FprNet(nn.Module):
    """False-positive reduction of the CAD findings: three orthogonal 32×32 grey planes
    (axial, coronal, sagittal at 1 mm) through a candidate as channels, plus a few shape
    features → conv 16@3×3 → pool → conv 32@3×3 → pool → conv 32@3×3 → pool → FC 64 (with
    the shape features) → one nodule logit. ``mix`` = (weight of the hand-set evidence,
    weight of this logit × temperature) in the findings' score, chosen when trained."""

    def __init__(self, n_extra: int = 5, size: int = 32,
                 mix: tuple[float, float] = (1.0, 0.0)) -> None:
        super().__init__()
        self.n_extra, self.size = n_extra, size
        self.mix = (float(mix[0]), float(mix[1]))
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * (size // 8) ** 2 + n_extra, 64)
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(64, 1)

    def forward(self, x, extra=None):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        x = torch.flatten(x, 1)
        if self.n_extra:
            if extra is None:
                extra = x.new_zeros((len(x), self.n_extra))
            x = torch.cat([x, extra], 1)
        return self.out(self.dropout(F.relu(self.fc(x))))[:, 0]


def build(arch: str, config: dict) -> nn.Module:
    """An untrained network from a manifest entry's architecture name and config."""
    if arch == "MultiTaskNet":
        return MultiTaskNet(config["scheme"], tuple(config["n_classes"]),
                            n_extra=config.get("n_extra", 2))
    if arch == "NoduleDetector":
        return NoduleDetector()
    if arch == "SliceHead":
        return SliceHead()
    if arch == "FprNet":
        return FprNet(config.get("n_extra", 5), config.get("size", 32),
                      tuple(config.get("mix", (1.0, 0.0))))
    raise ValueError(f"unknown architecture {arch!r}")
