"""ST-GCN action recogniser, as ACTOR and InfAGenC configure it (reference/infant.md §5).

Input ``x`` (N, V, C, T) — the ACTOR batch layout, e.g. (N, 24, 6, T) rot6d poses — with
one person. ``data_bn`` normalises every (joint, channel) pair, then 10 blocks of spatial
graph convolution (3 partitions, learnable edge importance) and temporal convolution
(kernel 9) with residuals; global average pooling gives the features and a 1x1 conv the
logits. ``forward`` returns ``(logits (N, classes), features (N, D))``; features are
flattened from the pooled (N, D, 1, 1), never ``squeeze()``d, so a batch of one stays
(1, D) and a batch of D is not mistaken for a single sample (defect 7).

Graphs (``affectlab.constants.infant.GRAPH_LAYOUTS``): ``smpl`` (24 joints, SMPL
kinematic tree, centre 0; the paper setting) and ``infact`` (H36M-17, centre 0).
Spatial partitions with ``max_hop`` 1: the node itself, neighbours farther from the centre
and neighbours nearer to it, each weighted by the column-normalised adjacency. The
distance to the centre is the true graph distance. (The reference ST-GCN code caps it at
``max_hop``, which sends every edge beyond the centre's neighbours to the first
partition; the parameter count is the same either way.)

Sizes: the ``paper`` preset has 3,083,941 parameters for 24 x 6 input and 5 classes
(reference: 3.08 M).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from affectlab.constants.infant import GRAPH_LAYOUTS

PAPER_BLOCKS = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1))


@dataclass(frozen=True)
class STGCNConfig:
    in_channels: int = 6  # rot6d
    num_classes: int = 5
    layout: str = "smpl"
    blocks: tuple[tuple[int, int], ...] = PAPER_BLOCKS  # (out channels, temporal stride); the first has no residual
    temporal_kernel: int = 9
    dropout: float = 0.0
    edge_importance: bool = True


PRESETS = {
    "paper": {},
    "tiny": {"blocks": ((16, 1), (32, 2), (32, 1))},
}


def stgcn_config(preset: str = "paper", **overrides) -> STGCNConfig:
    """The named preset (``paper``, ``tiny``) with dataset-specific fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ST-GCN preset {preset!r}; expected one of {sorted(PRESETS)}")
    return replace(STGCNConfig(**PRESETS[preset]), **overrides)


def hop_distance(num_nodes: int, edges, max_hop: int | None = None) -> np.ndarray:
    """Graph distance between every pair of nodes (inf when unreachable or > ``max_hop``)."""
    link = np.eye(num_nodes, dtype=bool)
    for i, j in edges:
        link[i, j] = link[j, i] = True
    dist = np.full((num_nodes, num_nodes), np.inf)
    reach = np.eye(num_nodes, dtype=bool)
    for d in range(num_nodes if max_hop is None else max_hop + 1):
        dist[reach & np.isinf(dist)] = d
        reach = (reach.astype(np.int64) @ link.astype(np.int64)) > 0
    return dist


def spatial_partitions(num_nodes: int, edges, center: int, max_hop: int = 1) -> np.ndarray:
    """(1 + 2 * max_hop, V, V) partitions of the spatial strategy; ``A[k, j, i]`` weighs
    what target node ``i`` takes from neighbour ``j``."""
    hops = hop_distance(num_nodes, edges, max_hop)
    to_center = hop_distance(num_nodes, edges)[:, center]
    if np.isinf(to_center).any():
        raise ValueError(f"graph nodes {np.flatnonzero(np.isinf(to_center)).tolist()} are not connected to centre {center}")
    adjacency = (hops <= max_hop).astype(np.float64)
    normalized = adjacency / adjacency.sum(axis=0, keepdims=True)  # every target column sums to 1
    partitions = []
    for hop in range(max_hop + 1):
        at_hop = hops == hop
        same = at_hop & (to_center[:, None] == to_center[None, :])
        farther = at_hop & (to_center[:, None] > to_center[None, :])  # neighbour j farther out than target i
        nearer = at_hop & (to_center[:, None] < to_center[None, :])
        if hop == 0:
            partitions.append(normalized * same)
        else:
            partitions += [normalized * (same | farther), normalized * nearer]
    return np.stack(partitions).astype(np.float32)


class GraphConv(nn.Module):
    """1x1 conv to K x C_out channels, then ``sum_k x_k A_k`` over the joints."""

    def __init__(self, in_channels: int, out_channels: int, num_partitions: int):
        super().__init__()
        self.num_partitions = num_partitions
        self.conv = nn.Conv2d(in_channels, out_channels * num_partitions, kernel_size=1)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        n, _, t, v = x.shape
        x = self.conv(x).view(n, self.num_partitions, -1, t, v)
        return torch.einsum("nkctv,kvw->nctw", x, adjacency).contiguous()


class STGCNBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_partitions: int, kernel: int, stride: int, dropout: float, residual: bool):
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, num_partitions)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel, 1), (stride, 1), ((kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = self.tcn(self.gcn(x, adjacency))
        if self.residual is not None:
            out = out + self.residual(x)
        return F.relu(out)


class STGCN(nn.Module):
    def __init__(self, cfg: STGCNConfig = STGCNConfig()):
        super().__init__()
        if cfg.layout not in GRAPH_LAYOUTS:
            raise ValueError(f"unknown graph layout {cfg.layout!r}; expected one of {sorted(GRAPH_LAYOUTS)}")
        self.cfg = cfg
        num_nodes, edges, center = GRAPH_LAYOUTS[cfg.layout]
        self.num_nodes = num_nodes
        self.register_buffer("A", torch.from_numpy(spatial_partitions(num_nodes, edges, center)))
        k = self.A.shape[0]
        self.data_bn = nn.BatchNorm1d(cfg.in_channels * num_nodes)
        channels = [cfg.in_channels] + [c for c, _ in cfg.blocks]
        self.blocks = nn.ModuleList(
            STGCNBlock(channels[i], c, k, cfg.temporal_kernel, stride, cfg.dropout, residual=i > 0)
            for i, (c, stride) in enumerate(cfg.blocks)
        )
        # one learnable (K, V, V) weight on the graph per block
        self.edge_importance = (
            nn.ParameterList(nn.Parameter(torch.ones_like(self.A)) for _ in cfg.blocks) if cfg.edge_importance else None
        )
        self.fcn = nn.Conv2d(channels[-1], cfg.num_classes, kernel_size=1)

    @property
    def feature_dim(self) -> int:
        return self.cfg.blocks[-1][0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, V, C, T) -> logits (N, num_classes), features (N, D). A translation row
        (V + 1 rows) is dropped."""
        if x.shape[1] == self.num_nodes + 1:
            x = x[:, :-1]
        n, v, c, t = x.shape
        if v != self.num_nodes or c != self.cfg.in_channels:
            raise ValueError(f"ST-GCN expects (N, {self.num_nodes}, {self.cfg.in_channels}, T) input, got {tuple(x.shape)}")
        x = self.data_bn(x.reshape(n, v * c, t))  # BN over (joint, channel) pairs
        x = x.view(n, v, c, t).permute(0, 2, 3, 1).contiguous()  # (N, C, T, V)
        for i, block in enumerate(self.blocks):
            x = block(x, self.A * self.edge_importance[i] if self.edge_importance is not None else self.A)
        pooled = F.adaptive_avg_pool2d(x, 1)  # (N, D, 1, 1): squeeze only these two axes
        return self.fcn(pooled).flatten(1), pooled.flatten(1)


def build_stgcn(preset: str = "paper", **overrides) -> STGCN:
    return STGCN(stgcn_config(preset, **overrides))
