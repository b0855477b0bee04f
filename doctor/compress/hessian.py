"""The inverse-Hessian factor GPTQ and SparseGPT share, with the reference implementations' dead-input rule.

Both IST-DASLab/gptq (`fasterquant`) and IST-DASLab/sparsegpt (`fasterprune`) give an input feature that is always
zero (diag H = 0) a unit diagonal and zero its weights, add `damp * mean(diag H)` to the diagonal, and take the
upper Cholesky factor of the inverse: cholesky -> cholesky_inverse -> cholesky(upper). Where the references stop
with an error on a Hessian that is not numerically positive definite, the dampening is raised tenfold up to
`retries` times (logged); only then does the checkup fail.
"""

from __future__ import annotations

import logging

import torch

from doctor.errors import NumericError

log = logging.getLogger(__name__)


def drop_dead_inputs(W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """In place: unit diagonal for dead inputs of `H`, their columns of `W` zeroed. Returns the dead mask."""
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return dead


def inverse_hessian_factor(H: torch.Tensor, damp: float, retries: int = 3) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1; more dampening if H is numerically singular."""
    H = H.float()
    mean_diag = H.diagonal().mean()
    for attempt in range(retries + 1):
        damped = H.clone()
        damped.diagonal().add_(damp * 10**attempt * mean_diag)
        L, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            if attempt:
                log.warning("Hessian not positive definite; dampening raised to %.3g", damp * 10**attempt)
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise NumericError(f"calibration Hessian is not positive definite even with dampening {damp * 10**retries}")
