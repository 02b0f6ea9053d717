"""The training loss of a registration network (the paper's, DESIGN.md 1.4):

    L = Sim(I0 o A o phi, I1) + c_A Sim(I0 o A, I1)                      (similarity; affine stage)
      + lambda sum_k 1/2 <m0_k, K(h0_k) m0_k>                             (regularity, every step)
      + lambda_OMT(T) OMT(w0) + lambda_Range(T) Range(w0)                 (RDMM, w0 = G_sigma h0)
      + c_IC mean |phi_st o phi_ts - id|^2                                 (bidirectional batches)

with T the epoch in the penalties' schedule lambda_T = K / (K + exp(T / K)), as optimisation uses the
iteration. Every term is the mean over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..core.interpolation import identity_map, sample
from ..metric import inner_product
from ..optim.penalties import omt_penalty, penalty_weights, range_penalty
from ..optim.preweights import constant_preweights
from ..similarity import make_similarity
from .network import Prediction, RegistrationNetwork, map_spacing

__all__ = ["RegistrationLoss", "inverse_consistency"]


def inverse_consistency(phi_st: Tensor, phi_ts: Tensor, spacing: Sequence[float]) -> Tensor:
    """mean over the batch, axes and voxels of |phi_st o phi_ts - id|^2 and |phi_ts o phi_st - id|^2
    (their average); maps (B, d, *S) pull-backs in domain coordinates, returns a scalar."""
    ident = identity_map(phi_st.shape[2:], spacing, dtype=phi_st.dtype, device=phi_st.device)
    a = (sample(phi_st, phi_ts, spacing) - ident).pow(2).mean()
    b = (sample(phi_ts, phi_st, spacing) - ident).pow(2).mean()
    return 0.5 * (a + b)


class RegistrationLoss(nn.Module):
    """The loss of :mod:`this module <rdmm_pipelines.learning.loss>` for a network's configuration.

    ``forward(net, prediction, target, spacing, epoch)`` returns the named terms (scalars), with
    ``"total"`` their sum. When the batch is bidirectional (the second half of the batch are the
    first half's pairs reversed) pass ``bidirectional=True`` to add the inverse-consistency term.
    """

    def __init__(self, net: RegistrationNetwork) -> None:
        super().__init__()
        self.cfg = net.cfg
        self.similarity = make_similarity(net.cfg.similarity.name, net.cfg.image_shape,
                                          sigma=net.cfg.similarity.sigma, window=net.cfg.similarity.window,
                                          bins=net.cfg.similarity.bins)

    def forward(self, net: RegistrationNetwork, pred: Prediction, target: Tensor, spacing: Sequence[float],
                epoch: float, bidirectional: bool = False) -> dict[str, Tensor]:
        cfg = self.cfg
        zero = target.new_zeros(())
        terms = {"similarity": self.similarity(pred.warped, target).mean(), "affine_similarity": zero,
                 "regularity": zero, "omt": zero, "range": zero, "inverse_consistency": zero}
        if pred.affine_warped is not None and cfg.affine_similarity_weight > 0:
            terms["affine_similarity"] = cfg.affine_similarity_weight * self.similarity(pred.affine_warped, target).mean()
        mh = map_spacing(cfg.image_shape, cfg.map_shape, spacing)
        model = net.shooting_model(spacing)
        for step in pred.steps:
            terms["regularity"] = terms["regularity"] + cfg.regularity_weight * 0.5 * inner_product(step.m0, step.v0, mh).mean()
            if step.h0 is not None:
                r = cfg.regional
                lam_range, lam_omt = penalty_weights(epoch, r.decay_k, r.c_range, r.c_omt, r.decay_floor)
                w0 = model.metric.weights(step.h0, mh)
                w_init = constant_preweights(cfg.kernel.normalized_weights, cfg.map_shape, w0.dtype, w0.device)
                terms["omt"] = terms["omt"] + lam_omt * omt_penalty(w0, model.metric.sigmas, r.omt_power, mh).mean()
                terms["range"] = terms["range"] + lam_range * range_penalty(w0, w_init, mh).mean()
        if bidirectional and cfg.inverse_consistency_weight > 0:
            full = pred.full_map
            half = full.shape[0] // 2
            terms["inverse_consistency"] = cfg.inverse_consistency_weight * inverse_consistency(
                full[:half], full[half:], spacing)
        terms["total"] = sum(terms.values(), zero)
        return terms
