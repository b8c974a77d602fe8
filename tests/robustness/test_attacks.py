"""FGSM / PGD as pure tensor functions: the budget, the pixel range, closed-form optima."""

import pytest
import torch

from tasks.robustness.attacks import fgsm, pgd, project


def images(seed: int = 0, shape=(5, 3, 8, 8)) -> torch.Tensor:
    """Images in [0, 1] with many pixels exactly at 0 and 1 (where clipping bites)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    return x


def linear_loss(weights: torch.Tensor):
    """Per-image ``<w, x>``: its maximiser in the eps ball is ``x + eps * sign(w)``, clipped."""
    return lambda x: (x * weights).flatten(1).sum(dim=1)


def corner(x: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor:
    """The closed-form maximiser of the linear loss in the ball and [0, 1], written out."""
    return torch.clamp(x + eps * torch.sign(weights), 0.0, 1.0)


def small_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 3))
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    targets = torch.tensor([0, 1, 2, 0, 1])
    return lambda x: torch.nn.functional.cross_entropy(net(x), targets, reduction="none")


@pytest.mark.parametrize("eps", [1 / 255, 4 / 255, 0.3])
def test_attacks_stay_in_the_ball_and_in_the_pixel_range(eps):
    x, loss = images(), small_network()
    generator = torch.Generator().manual_seed(1)
    for adv in (fgsm(loss, x, eps), pgd(loss, x, eps, steps=5, generator=generator),
                pgd(loss, x, eps, steps=3, step_size=eps, random_start=False)):
        assert adv.shape == x.shape and not adv.requires_grad
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert (adv != x).any()


def test_fgsm_is_the_signed_gradient_step_clipped():
    x = images()
    weights = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(2))
    eps = 0.05
    torch.testing.assert_close(fgsm(linear_loss(weights), x, eps), corner(x, weights, eps))


def test_pgd_reaches_the_linear_optimum_from_a_random_start():
    x = images(3)
    weights = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(4))
    eps = 0.1
    generator = torch.Generator().manual_seed(0)
    adv = pgd(linear_loss(weights), x, eps, steps=10, random_start=True, generator=generator)
    # 10 steps of 2.5 * eps / 10 travel 2.5 eps: every pixel ends on its bound
    torch.testing.assert_close(adv, corner(x, weights, eps))


def test_pgd_random_start_is_seeded():
    x, loss = images(), small_network()

    def run(seed: int) -> torch.Tensor:
        return pgd(loss, x, 0.05, steps=1, step_size=1e-4,
                   generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_pgd_keeps_each_images_highest_loss_iterate():
    x, loss = images(), small_network()
    eps = 0.2
    one = pgd(loss, x, eps, steps=1, random_start=False)
    many = pgd(loss, x, eps, steps=8, random_start=False)
    assert (loss(many) >= loss(one) - 1e-6).all()
    assert (loss(many) >= loss(x) - 1e-6).all()


def test_project_clips_to_both_sets():
    x = torch.tensor([0.0, 0.5, 1.0, 0.98])
    out = project(torch.tensor([-0.3, 0.9, 1.4, 0.9]), x, 0.05)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.55, 1.0, 0.93]))


def test_bad_arguments_are_refused():
    x = images()
    with pytest.raises(ValueError, match="one loss per image"):
        fgsm(lambda v: v.sum(), x, 0.1)
    with pytest.raises(ValueError, match="eps"):
        fgsm(small_network(), x, 2.0)
    with pytest.raises(ValueError, match="steps"):
        pgd(small_network(), x, 0.1, steps=0)
