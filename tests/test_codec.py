"""DistilCodec: codec shapes and code paths, DMS inheritance, the latent term, GAN training, metrics, predict."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cli
from modules.codec import BlockLinear, Codec, CodecWriter, CodeUsage, Discriminators, DistilCodec
from modules.core import Teacher
from zoo import store

TINY = dict(
    n_mels=32,
    encoder_dims=(16, 16),
    encoder_depths=(1, 1),
    upsample_rates=(8, 8, 4),
    upsample_kernel_sizes=(16, 16, 8),
    upsample_initial_channel=32,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1,),),
)
TINY_D = dict(periods=(2, 3), period_channels=(4, 8), scale_channels=(4, 4, 8, 8, 8, 8, 8), stft_ffts=(256,))


def student(**kw) -> Codec:
    return Codec(**TINY, **({"codebook_size": 64, "codebook_dim": 32} | kw))


def teacher() -> Codec:
    return Codec(**TINY, groups=2, residual=3, codebook_size=16, codebook_dim=8)


def module(s: Codec, t: Codec | None = None, **kw) -> DistilCodec:
    return DistilCodec(s, Teacher(t) if t is not None else None, discriminator=Discriminators(**TINY_D), **kw)


@pytest.mark.parametrize("make", [student, teacher], ids=["single", "grouped-residual"])
def test_codes_round_trip_to_the_same_audio(make):
    torch.manual_seed(0)
    codec = make().eval()
    wav = 0.1 * torch.randn(2, 1, 3000)  # not a multiple of the hop: padded, then cropped back
    codes = codec.encode(wav)
    q = codec.quantizer
    assert codes.shape == (2, q.groups, -(-3000 // codec.hop), q.residual)
    assert 0 <= codes.min() and codes.max() < q.codebook_size
    # decoding the integer codes gives exactly what the forward pass reconstructs
    assert torch.allclose(codec.decode(codes)[..., :3000], codec(wav)["audio"], atol=1e-5)
    assert codec.bits_per_frame == q.groups * q.residual * torch.log2(torch.tensor(q.codebook_size)).item()


def test_bad_codes_and_bad_audio_are_refused_by_name():
    codec = student().eval()
    with pytest.raises(ValueError, match="codes must lie in"):
        codec.decode(torch.full((1, 1, 4, 1), 64))
    with pytest.raises(ValueError, match="groups"):
        codec.decode(torch.zeros(1, 2, 4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="mono"):
        codec.encode(torch.zeros(1, 2, 1024))


def test_dms_inherits_encoder_and_generator_but_not_the_quantizer():
    torch.manual_seed(0)
    t = teacher()
    m = module(student(), t)
    for part in ("encoder", "generator"):
        for (name, p), q in zip(getattr(m.student, part).state_dict().items(), getattr(t, part).state_dict().values()):
            assert torch.equal(p, q), f"{part}.{name} was not inherited"
    pre_s, pre_t = m.student.quantizer.pre[0].weight, t.quantizer.pre[0].weight
    assert not torch.equal(pre_s, pre_t)
    fresh = module(student(), t, inherit=False)
    assert not torch.equal(fresh.student.encoder.layers[0].weight, t.encoder.layers[0].weight)
    with pytest.raises(ValueError, match="cannot inherit the teacher's encoder"):
        module(Codec(**(TINY | {"encoder_dims": (16, 24)})), t)


def test_latent_term_trains_the_student_through_a_block_diagonal_map():
    torch.manual_seed(0)
    t = teacher()
    m = module(student(), t, latent_weight=2.0).train()
    proj = m.projectors["latent"]
    assert isinstance(proj, BlockLinear) and proj.weight.shape == (2, 8, 16)  # 2 teacher groups x 8 -> 32 / 2
    wav = 0.1 * torch.randn(2, 1, 2048)
    terms = m.distill_loss(wav)
    assert set(terms) == {"adv", "fm", "mel", "commit", "latent"} and terms["latent"] > 0
    terms["latent"].backward()
    assert m.student.encoder.layers[0].weight.grad.abs().sum() > 0  # straight-through into the encoder
    assert proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    with pytest.raises(ValueError, match="need a teacher"):
        module(student(), None, latent_weight=2.0)
    # block-diagonal: group g of the output depends only on group g of the input
    x = torch.zeros(1, 1, 16)
    x[..., 8:] = 1.0
    assert torch.equal(proj(x)[..., :16], torch.zeros(1, 1, 16))


def test_code_usage_and_perplexity_are_exact():
    metric = CodeUsage(num_codebooks=1, codebook_size=8)
    metric.update(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]).view(1, 1, 8, 1))
    out = metric.compute()
    assert out["usage"].item() == pytest.approx(50.0) and out["perplexity"].item() == pytest.approx(4.0)


def test_fit_steps_both_optimisers_and_tests_every_metric(tmp_path: Path):
    run = cli.main(
        [
            "fit",
            "--config=recipes/codec/tiny.yaml",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    m: DistilCodec = run.model
    assert m.trainer.global_step == 2 * 2  # 8 segments / batch 4 = 2 steps, each an optimizer.step of G and D
    metrics = run.test_metrics
    for key in ("test/usage", "test/perplexity", "test/mel_distance", "test/stoi", "test/pesq"):
        assert key in metrics, sorted(metrics)
    assert 0 < metrics["test/usage"] <= 100 and 1 <= metrics["test/perplexity"] <= 64
    ckpt = torch.load(next(tmp_path.rglob("best.ckpt")), weights_only=True)
    assert ckpt["distillzoo"]["student_spec"]["class_path"] == "modules.codec.Codec"
    assert len(ckpt["optimizer_states"]) == 2


def test_predict_writes_tokens_then_decodes_them_back(tmp_path: Path):
    torch.manual_seed(0)
    m = module(student(), eval_quality=False).eval()
    writer = CodecWriter(str(tmp_path))
    wav = 0.1 * torch.randn(1, 1, 2500)
    pred = m.predict_step({"audio": wav, "path": ["a/clip.flac"]}, 0)
    writer.write_on_batch_end(None, m, pred, None, None, 0, 0)
    codes = load_file(tmp_path / "clip.codes.safetensors")["codes"]
    assert codes.dtype == torch.int32 and codes.shape == (1, -(-2500 // 256), 1)
    again = m.predict_step({"codes": codes[None].long(), "path": ["clip.codes.safetensors"]}, 0)
    assert torch.allclose(again["audio"][..., :2500], pred["audio"], atol=1e-5)
    import soundfile

    audio, rate = soundfile.read(tmp_path / "clip.wav")
    assert rate == 16000 and len(audio) == 2500


def test_exported_student_rebuilds_from_its_spec():
    m = module(student())
    net, spec = m.export_student()
    rebuilt = store.build(copy.deepcopy(spec))
    assert type(rebuilt) is Codec and rebuilt.init_args == net.init_args
