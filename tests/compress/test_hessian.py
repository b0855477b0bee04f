"""The one inverse-Hessian factor GPTQ and SparseGPT share: upstream's formula, dampening retries, dead inputs."""

from __future__ import annotations

import pytest
import torch

from doctor.compress.hessian import drop_dead_inputs, inverse_hessian_factor
from doctor.errors import NumericError


def test_factor_is_upstreams_cholesky_of_the_damped_inverse():
    X = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    H = 2 * X.t() @ X / 200
    U = inverse_hessian_factor(H, 0.01)
    damped = H + 0.01 * H.diagonal().mean() * torch.eye(6)
    torch.testing.assert_close(U.t() @ U, torch.linalg.inv(damped), rtol=1e-4, atol=1e-5)
    assert torch.equal(U, U.triu())


def test_dampening_is_raised_tenfold_until_positive_definite(caplog):
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # eigenvalues -2 and 4: needs a shift above 2
    U = inverse_hessian_factor(H, 0.01, retries=3)  # 0.01, 0.1, 1 fail; 10 x mean(diag) works
    torch.testing.assert_close(U.t() @ U, torch.linalg.inv(H + 10 * torch.eye(2)))
    assert "dampening raised to 10" in caplog.text
    with pytest.raises(NumericError, match="not positive definite"):
        inverse_hessian_factor(H, 0.01, retries=2)


def test_dead_inputs_get_a_unit_diagonal_and_zero_weights():
    H = torch.diag(torch.tensor([2.0, 0.0, 3.0]))
    W = torch.ones(2, 3)
    dead = drop_dead_inputs(W, H)
    assert dead.tolist() == [False, True, False]
    assert H[1, 1] == 1 and (W[:, 1] == 0).all() and (W[:, [0, 2]] == 1).all()
