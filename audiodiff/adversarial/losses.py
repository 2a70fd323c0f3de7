"""GAN losses (HiFi-GAN, Kong, Kim & Bae 2020, Eq. 1-3): least-squares adversarial terms for the discriminators and
the generator, and feature matching over the discriminators' intermediate activations.

    L_adv(D; G) = E[(D(x) − 1)² + D(G(s))²]     (discriminator_loss)
    L_adv(G; D) = E[(D(G(s)) − 1)²]             (generator_adversarial_loss)
    L_fm(G; D)  = E[Σ_i ‖D_i(x) − D_i(G(s))‖₁ / N_i]   (feature_matching_loss)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def discriminator_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """Least-squares GAN discriminator loss (Mao et al. 2017; HiFi-GAN Eq. 1), summed over sub-discriminators:
    ``sum_k mean((1 - D_k(x))^2) + mean(D_k(G(s))^2)``. Pass ``fake_logits`` computed on a detached ``G(s)``."""
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError(
            f"discriminator_loss: need as many real as fake logits (>= 1), got {len(real_logits)} and "
            f"{len(fake_logits)}"
        )
    loss = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits, strict=True):
        loss = loss + (1.0 - real).square().mean() + fake.square().mean()
    return loss


def generator_adversarial_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Least-squares GAN generator loss (HiFi-GAN Eq. 2), summed over sub-discriminators:
    ``sum_k mean((1 - D_k(G(s)))^2)``."""
    if not fake_logits:
        raise ValueError("generator_adversarial_loss: need at least one logits tensor")
    loss = fake_logits[0].new_zeros(())
    for fake in fake_logits:
        loss = loss + (1.0 - fake).square().mean()
    return loss


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]
) -> Tensor:
    """Feature matching (Larsen et al. 2016; HiFi-GAN Eq. 4): ``sum_k sum_i mean|D_k^i(x) - D_k^i(G(s))|`` over
    every sub-discriminator ``k`` and layer ``i``. The real features are detached: only ``G`` learns from it.
    HiFi-GAN weighs it by ``lambda_fm = 2``."""
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(
            f"feature_matching_loss: need as many real as fake feature lists (>= 1), got {len(real_features)} and "
            f"{len(fake_features)}"
        )
    loss = fake_features[0][0].new_zeros(())
    for k, (reals, fakes) in enumerate(zip(real_features, fake_features, strict=True)):
        if len(reals) != len(fakes):
            raise ValueError(f"feature_matching_loss: discriminator {k} has {len(reals)} real, {len(fakes)} fake maps")
        for real, fake in zip(reals, fakes, strict=True):
            loss = loss + (real.detach() - fake).abs().mean()
    return loss
