"""Stable Audio Open's parts in audiodiff's modules equal diffusers' with the same random weights (fp32, CPU):
the DiT, the Oobleck VAE, T5 + projection + seconds conditioning, the v-objective's preconditioning and the
DPM-Solver++(2M) SDE sampler. Tolerance 1e-4 relative (max |Δ| / max |reference|)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("torchsde")
import diffusers  # noqa: E402
import stable_audio_tiny as tiny  # noqa: E402
from diffusers.models.embeddings import get_1d_rotary_pos_embed  # noqa: E402

from audiodiff.conditioning.stable_audio import StableAudioConditioning  # noqa: E402
from audiodiff.conditioning.text import TextEncoder  # noqa: E402
from audiodiff.conditioning.types import Conditioning  # noqa: E402
from audiodiff.denoisers.stable_audio_dit import StableAudioDiT  # noqa: E402
from audiodiff.diffusion.objectives import VDiffusion  # noqa: E402
from audiodiff.diffusion.samplers import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde  # noqa: E402
from audiodiff.diffusion.schedules import t_from_sigma  # noqa: E402
from audiodiff.models.stable_audio_keys import (  # noqa: E402
    DIFFUSERS_DIT,
    DIFFUSERS_PROJECTION,
    DIFFUSERS_VAE,
    fold_weight_norm,
    rename,
)
from audiodiff.representations.oobleck import OobleckRepresentation  # noqa: E402

TOL = 1e-4


def _dit_pair() -> tuple[diffusers.StableAudioDiTModel, StableAudioDiT]:
    torch.manual_seed(0)
    ref = tiny.perturb(diffusers.StableAudioDiTModel(**tiny.DIT)).eval()
    c = tiny.DIT
    ours = StableAudioDiT(in_channels=c["in_channels"], width=c["num_attention_heads"] * c["attention_head_dim"],
                          depth=c["num_layers"], heads=c["num_attention_heads"],
                          kv_heads=c["num_key_value_attention_heads"], context_dim=c["cross_attention_dim"],
                          global_dim=c["global_states_input_dim"], time_features=c["time_proj_dim"]).eval()
    ours.load_state_dict(rename(ref.state_dict(), DIFFUSERS_DIT, "transformer"))
    return ref, ours


def test_dit_equals_diffusers():
    ref, ours = _dit_pair()
    torch.manual_seed(1)
    b, length = 3, tiny.DIT["sample_size"]
    x = torch.randn(b, tiny.DIT["in_channels"], length)
    tau = torch.tensor([0.02, 0.5, 0.999])
    tokens = torch.randn(b, 7, tiny.DIT["cross_attention_dim"])
    tokens[0, 4:] = 0.0  # zero padding still takes part in the softmax: no cross-attention mask
    globals_ = torch.randn(b, tiny.DIT["global_states_input_dim"])
    rope = get_1d_rotary_pos_embed(tiny.DIT["attention_head_dim"] // 2, length + 1, use_real=True,
                                   repeat_interleave_real=False)
    with torch.no_grad():
        expected = ref(x, tau, encoder_hidden_states=tokens, global_hidden_states=globals_[:, None],
                       rotary_embedding=rope, return_dict=False)[0]
        got = ours(x, tau, Conditioning(tokens, torch.ones(b, 7, dtype=torch.bool), None, globals_))
    assert got.shape == expected.shape
    assert tiny.relative_error(got, expected) < TOL


def test_dit_context_mask_switch():
    """With the switch on, masked tokens are ignored: equal to the sequence without them."""
    _, ours = _dit_pair()
    ours.context_mask = True
    torch.manual_seed(2)
    x, tau = torch.randn(1, 8, 16), torch.tensor([0.3])
    tokens, globals_ = torch.randn(1, 6, 24), torch.randn(1, 48)
    mask = torch.tensor([[True, True, True, False, False, False]])
    with torch.no_grad():
        masked = ours(x, tau, Conditioning(tokens, mask, None, globals_))
        short = ours(x, tau, Conditioning(tokens[:, :3], mask[:, :3], None, globals_))
    assert tiny.relative_error(masked, short) < 1e-5


def _vae_pair() -> tuple[diffusers.AutoencoderOobleck, OobleckRepresentation]:
    torch.manual_seed(0)
    ref = tiny.perturb(diffusers.AutoencoderOobleck(**tiny.VAE)).eval()
    c = tiny.VAE
    ours = OobleckRepresentation(audio_channels=c["audio_channels"], latent_channels=c["decoder_input_channels"],
                                 channels=c["encoder_hidden_size"], decoder_channels=c["decoder_channels"],
                                 strides=c["downsampling_ratios"], channel_multiples=c["channel_multiples"],
                                 sample_rate=c["sampling_rate"])
    state = rename(fold_weight_norm(ref.state_dict(), "vae"), DIFFUSERS_VAE, "vae")
    ours.autoencoder.load_state_dict(state)
    return ref, ours


def test_vae_encode_and_decode_equal_diffusers():
    ref, ours = _vae_pair()
    torch.manual_seed(3)
    wav = torch.randn(2, 2, 8 * 12) * 0.5
    z = torch.randn(2, 8, 12)
    with torch.no_grad():
        posterior = ref.encode(wav).latent_dist
        got = ours.autoencoder.encode(wav)
        assert tiny.relative_error(ours.encode(wav), posterior.mean) < TOL
        assert tiny.relative_error(got.std, posterior.std) < TOL
        assert tiny.relative_error(ours.decode(z), ref.decode(z).sample) < TOL
        # audio-to-audio encodes with a posterior sample: the same generator gives the same sample
        sample = ours.encode_sample(wav, torch.Generator().manual_seed(5))
        expected = posterior.sample(torch.Generator().manual_seed(5))
        assert tiny.relative_error(sample, expected) < TOL
    assert ours.channels == 2 and ours.frame_rate == tiny.SAMPLE_RATE / 8


@pytest.fixture(scope="module")
def pipeline_and_t5(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("t5")
    pipe = tiny.diffusers_pipeline()
    pipe.text_encoder.save_pretrained(folder)
    pipe.tokenizer.save_pretrained(folder)
    return pipe, folder


@pytest.mark.parametrize("negative", [False, True])
def test_conditioning_equals_diffusers(pipeline_and_t5, negative: bool):
    """T5 (padded to 128, padding zeroed) + projection + seconds tokens + global vector, for prompts, a negative
    prompt, and the all-zero unconditional sequence that keeps the global vector."""
    pipe, folder = pipeline_and_t5
    prompts = ["a dog barks", "soft rain on the roof far away"]
    negatives = ["low quality noise"] * 2 if negative else None
    start, end = 0.0, 30.0
    with torch.no_grad():
        text = pipe.encode_prompt(prompts, "cpu", True, negatives)
        seconds = pipe.encode_duration(start, end, "cpu", negative, len(prompts))
    s_start, s_end = seconds
    cross = torch.cat([text, s_start, s_end], dim=1)
    if not negative:  # the pipeline's unconditional branch: every cross-attention token zero
        cross = torch.cat([torch.zeros_like(cross), cross])
        s_start, s_end = torch.cat([s_start, s_start]), torch.cat([s_end, s_end])
    global_ = torch.cat([s_start, s_end], dim=2)[:, 0]

    encoder = TextEncoder(str(folder), max_length=tiny.TEXT_TOKENS)
    ours = StableAudioConditioning(text_dim=16, width=24, min_seconds=0, max_seconds=512)
    ours.load_state_dict(rename(pipe.projection_model.state_dict(), DIFFUSERS_PROJECTION, "projection_model"))
    captions = (negatives or [""] * 2) + prompts
    n = len(captions)
    with torch.no_grad():
        got = ours.condition(encoder(captions), torch.full((n,), start), torch.full((n,), end))
    assert got.tokens.shape == cross.shape == (4, tiny.TEXT_TOKENS + 2, 24)
    assert tiny.relative_error(got.tokens, cross) < TOL
    assert tiny.relative_error(got.globals_, global_) < TOL


def test_v_objective_preconditioning_equals_the_scheduler():
    """x̂0 from the network output, and the network's inputs, equal CosineDPMSolverMultistepScheduler's."""
    scheduler = diffusers.CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500)
    seen = {}

    def net(x, tau, cond):
        seen["x"], seen["tau"] = x, tau
        return torch.full_like(x, 0.7) - 0.1 * x

    torch.manual_seed(4)
    for sigma in (0.3, 4.0, 500.0):
        x_ve = torch.randn(1, 3, 5) * math.sqrt(sigma**2 + 1)
        t = t_from_sigma(torch.tensor([sigma]))
        x0 = VDiffusion().denoise(net, (x_ve * (1 - t)).float(), t, None)
        x_in = scheduler.precondition_inputs(x_ve, torch.tensor(sigma))
        assert tiny.relative_error(seen["x"], x_in) < 1e-6
        assert abs(float(seen["tau"]) - float(scheduler.precondition_noise(torch.tensor(sigma)))) < 1e-6
        expected = scheduler.precondition_outputs(x_ve, net(x_in, None, None), torch.tensor(sigma))
        assert tiny.relative_error(x0, expected) < 1e-5


@pytest.mark.parametrize("steps", [2, 10])
def test_dpmpp_2m_sde_equals_the_scheduler(steps: int):
    """Our pure DPM-Solver++(2M) SDE with an injected noise source equals the scheduler's steps with the same
    Brownian-tree noise (a toy denoiser, so only the solver is compared)."""
    scheduler = diffusers.CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500)
    scheduler.set_timesteps(steps)
    torch.manual_seed(6)
    noise = torch.randn(2, 3, 5)
    target = torch.randn(2, 3, 5)

    def v_net(x_vp, tau, cond):  # an arbitrary smooth network of the scheduler's inputs
        return torch.sin(x_vp) * 0.5 + tau.view(-1, 1, 1) * target

    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    tree = BrownianTreeNoiseSampler(noise, sigma_min=0.3, sigma_max=500, seed=[11, 12])
    scheduler.noise_sampler = tree
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        v = v_net(scheduler.scale_model_input(x, t), t.expand(2), None)
        x = scheduler.step(v, t, x).prev_sample
    objective = VDiffusion()
    times = objective.time_grid(steps)
    ours = sample_dpmpp_2m_sde(lambda x_, t_: objective.denoise(v_net, x_, t_, None),
                               noise * math.sqrt((1 - float(times[0])) ** 2 + float(times[0]) ** 2), times,
                               noise_sampler=lambda s, s_next: tree(torch.tensor(s), torch.tensor(s_next)))
    assert tiny.relative_error(ours, x) < 1e-4


def _dpmpp_3m_sde_ve(denoise_ve, x, sigmas, noise, eta=1.0):
    """k-diffusion's sample_dpmpp_3m_sde as published, in VE coordinates and float64: the reference."""
    denoised_1 = denoised_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise_ve(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x + -math.expm1(-h_eta) * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                x = x + (math.expm1(-h_eta) / h_eta + 1) * d
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta))
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h if sigmas[i + 1] != 0 else None, h_1
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpmpp_3m_sde_equals_k_diffusion(eta: float):
    """Our flow-coordinate DPM-Solver++(3M) SDE equals k-diffusion's VE algorithm (transcribed above, float64) with
    the same noise, on a nonlinear toy denoiser and the exponential grid from 500 to 0.3."""
    torch.manual_seed(8)
    target = torch.randn(2, 3, 5, dtype=torch.float64)

    def denoise_ve(y, sigma):  # x̂0 of a VE state
        return torch.tanh(y / math.sqrt(sigma**2 + 1)) + 0.3 * target

    draws = {}

    def noise(s, s_next):  # the same draw for the same step, whichever coordinates ask
        key = round(math.log(s), 6)
        if key not in draws:
            draws[key] = torch.randn(2, 3, 5, dtype=torch.float64)
        return draws[key]

    times = VDiffusion().time_grid(10)
    sigmas = [float(s) for s in (times[:-1] / (1 - times[:-1]))] + [0.0]
    start = torch.randn(2, 3, 5, dtype=torch.float64)
    expected = _dpmpp_3m_sde_ve(denoise_ve, start * sigmas[0], sigmas, noise, eta)
    t0 = float(times[0])
    ours = sample_dpmpp_3m_sde(lambda x, t: denoise_ve(x / (1 - float(t[0])), float(t[0]) / (1 - float(t[0]))),
                               start * sigmas[0] * (1 - t0), times, eta=eta, noise_sampler=noise)
    assert tiny.relative_error(ours, expected) < 1e-8


def test_brownian_tree_noise():
    from audiodiff.diffusion.noise import BrownianTreeNoise
    from audiodiff.models.model import SamplerSettings

    a = BrownianTreeNoise((4, 500), [1, 2], 0.3, 500.0)
    b = BrownianTreeNoise((4, 500), [1, 3], 0.3, 500.0)
    z = a(500.0, 40.0)
    assert z.shape == (2, 4, 500) and abs(float(z.std()) - 1) < 0.1
    assert torch.equal(z[0], b(500.0, 40.0)[0]) and not torch.equal(z[1], b(500.0, 40.0)[1])  # per-item seeds
    halves = (a(500.0, 100.0) * math.sqrt(400.0) + a(100.0, 40.0) * math.sqrt(60.0)) / math.sqrt(460.0)
    assert torch.allclose(halves, z, atol=1e-4)  # increments add up: the noise depends on the levels only
    with pytest.raises(ValueError, match="leave the tree's range"):
        a(math.inf, 40.0)
    with pytest.raises(ValueError, match="takes no Brownian-tree noise"):
        SamplerSettings(name="ddim", noise="brownian")


def test_dit_compiles_as_one_graph():
    """No graph breaks (torch.compile fullgraph), so compiled and CUDA-graph runs on a GPU take the whole step."""
    _, ours = _dit_pair()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x, tau = torch.randn(2, 8, 16), torch.tensor([0.2, 0.9])
    cond = Conditioning(torch.randn(2, 7, 24), torch.ones(2, 7, dtype=torch.bool), None, torch.randn(2, 48))
    with torch.no_grad():
        assert torch.allclose(compiled(x, tau, cond), ours(x, tau, cond), atol=1e-6)
