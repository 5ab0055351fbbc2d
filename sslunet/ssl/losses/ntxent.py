"""SimCLR's NT-Xent loss (Chen et al. 2020, ICML), i.e. Chaitanya et al.'s (2020) G^R.

With ``u`` the 2N L2-normalised embeddings of both views, ``s_ij = u_i . u_j / tau`` and
``p(i)`` the other view of the same image::

    l_i  = -log( e^{s_{i,p(i)}} / sum_{k != i} e^{s_ik} )      (numerator in the denominator)
    loss = 1/(2N) * sum_i l_i

Distributed (``torch.distributed`` initialised and ``gather_distributed``): every rank's local
anchors are compared with the keys of *all* ranks (gathered with gradients), so the negatives
grow with the world size. Each rank returns ``world_size / (2 N_total) * sum_{local i} l_i``;
with equal per-rank batches that is the mean over local anchors, and in every case the mean of
the per-rank losses (what DDP's gradient averaging optimises) equals the single-process loss on
the concatenated batch. Our choice where the papers are silent: Chaitanya et al. use tau = 0.1
(the default here); nnssl's SimCLR and MONAI use 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslunet.ssl.losses._distributed import distributed_world, gather_with_grad


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy over two views.

    Args:
        temperature: tau > 0.
        gather_distributed: gather keys from all ranks when torch.distributed is initialised.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: ``(N, D)`` embeddings of view 1.
            z2: ``(N, D)`` embeddings of view 2; row i of z1 and z2 form a positive pair.

        Returns:
            Scalar loss.
        """
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"z1 and z2 must both be (N, D), got {tuple(z1.shape)}, {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        _, world = distributed_world()
        if self.gather_distributed and world > 1:
            k1, offset = gather_with_grad(z1)  # (N_total, D)
            k2, _ = gather_with_grad(z2)  # (N_total, D)
        else:
            k1, k2, offset, world = z1, z2, 0, 1
        n_total = k1.shape[0]
        if n_total < 2:
            raise ValueError("NT-Xent needs at least two images in the (global) batch")
        anchors = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # (2n, D)
        keys = F.normalize(torch.cat([k1, k2], dim=0), dim=1)  # (2N_total, D)
        logits = anchors @ keys.T / self.temperature  # (2n, 2N_total)
        local = torch.arange(n, device=z1.device)
        self_idx = torch.cat([offset + local, n_total + offset + local])  # (2n,)
        pos_idx = torch.cat([n_total + offset + local, offset + local])  # (2n,)
        rows = torch.arange(2 * n, device=z1.device)
        logits = logits.clone()
        logits[rows, self_idx] = float("-inf")
        loss_sum = F.cross_entropy(logits, pos_idx, reduction="sum")
        return loss_sum * (world / (2 * n_total))
