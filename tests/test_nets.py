"""modules/nets: the exportable timm ViT, the MAE pieces with a shareable mask, and the dense probes.

Tiny networks only (width 32, depth 2, 32x32 images); no pretrained weight is ever downloaded."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from modules.core import FeatureTaps
from modules.nets.mae import (
    MAEDecoder,
    MAEEncoder,
    PatchMask,
    apply_mask,
    mae_pixel_loss,
    patchify,
    random_mask,
    sincos_pos_embed_2d,
    unpatchify,
)
from modules.nets.probes import DenseProbe, DepthProbe, SegmentationProbe, tokens_to_map
from modules.nets.vit import IMAGENET_MEAN, TimmViT
from zoo.specs import build, module_spec

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5}


def tiny_vit(**overrides) -> TimmViT:
    dynamic = overrides.pop("dynamic_img_size", False)
    mean_std = {k: overrides.pop(k) for k in ("mean", "std") if k in overrides}
    torch.manual_seed(0)
    return TimmViT(timm_kwargs={**TINY, **overrides}, dynamic_img_size=dynamic, **mean_std).eval()


def tiny_encoder(embed_dim: int = 32, seed: int = 0) -> MAEEncoder:
    torch.manual_seed(seed)
    return MAEEncoder(img_size=32, patch_size=8, embed_dim=embed_dim, depth=2, num_heads=2).eval()


def tiny_decoder(depth: int = 4) -> MAEDecoder:
    torch.manual_seed(1)
    return MAEDecoder(img_size=32, patch_size=8, encoder_dim=32, decoder_dim=16, depth=depth, num_heads=2).eval()


def images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def rebuilt(net: nn.Module) -> nn.Module:
    """Export through the spec (as JSON, as a weights file's metadata stores it), rebuild, load weights."""
    spec = json.loads(json.dumps(module_spec(net)))
    other = build(spec)
    other.load_state_dict(net.state_dict())
    return other.eval()


# ----- TimmViT ----------------------------------------------------------------------------------
def test_timm_vit_normalises_inside():
    from timm.models.vision_transformer import VisionTransformer

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    net = tiny_vit(mean=mean, std=std)
    plain = VisionTransformer(**TINY).eval()
    plain.load_state_dict(net.vit.state_dict())  # the state dict is the timm model's, under vit.
    assert not any(k in net.state_dict() for k in ("mean", "std"))  # non-persistent buffers
    x = images()
    expected = plain((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(net(x), expected)
    assert not torch.allclose(net(x), plain(x), atol=1e-3)


def test_timm_vit_default_statistics():
    assert tiny_vit().mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    # a named timm model normalises with its own pretrained statistics (augreg ViTs: 0.5, not ImageNet's)
    named = TimmViT("vit_tiny_patch16_224", timm_kwargs={"depth": 1, "img_size": 32})
    assert named.mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert named.embed_dim == 192 and named.grid_size == (2, 2)


@pytest.mark.parametrize(
    "extra", [{}, {"reg_tokens": 4, "dynamic_img_size": True}, {"class_token": False, "global_pool": "avg"}]
)
def test_timm_vit_export_round_trip(extra):
    net = tiny_vit(**extra)
    again = rebuilt(net)
    x = images()
    torch.testing.assert_close(again(x), net(x), rtol=0, atol=0)
    torch.testing.assert_close(again.forward_features(x), net.forward_features(x), rtol=0, atol=0)


def test_timm_vit_dynamic_image_size():
    net = tiny_vit(dynamic_img_size=True, reg_tokens=2)
    x = images(h=24, w=40)  # not square, not the 32x32 the positional embedding was made for
    assert net.grid_for(x.shape) == (3, 5)
    assert net.forward_features(x).shape == (2, 3 + 15, 32)
    assert net(x).shape == (2, 5)
    # at the trained size the interpolation is the identity: the same function as a fixed-size ViT
    fixed = tiny_vit(reg_tokens=2)
    fixed.load_state_dict(net.state_dict())
    torch.testing.assert_close(fixed(images()), net(images()))
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        fixed.grid_for(x.shape)


def test_timm_vit_intermediates_and_prefix_tokens():
    net = tiny_vit(reg_tokens=4)
    assert (net.num_prefix_tokens, net.reg_tokens, net.has_class_token) == (5, 4, True)
    assert (net.patch_size, net.embed_dim, net.grid_size) == ((8, 8), 32, (4, 4))
    x = images()
    final, inter = net.forward_intermediates(x, indices=[0, 1], norm=True, return_prefix_tokens=True)
    assert len(inter) == 2
    for patches, prefix in inter:
        assert patches.shape == (2, 32, 4, 4) and prefix.shape == (2, 5, 32)
    tokens = net.forward_features(x)
    torch.testing.assert_close(final, tokens)
    # the last block's normed intermediate is forward_features' patch tokens, as a grid
    torch.testing.assert_close(inter[-1][0], tokens_to_map(tokens, 5, (4, 4)))
    torch.testing.assert_close(inter[-1][1], tokens[:, :5])
    assert len(net.forward_intermediates(x, indices=1, intermediates_only=True)) == 1


def test_timm_vit_pretrained_offline_names_what_to_download(monkeypatch):
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
        raise AssertionError("only the pretrained path is exercised here")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError) as err:
        TimmViT("vit_tiny_patch16_224", pretrained=True)
    message = str(err.value)
    assert "'vit_tiny_patch16_224'" in message and "timm/vit_tiny_patch16_224" in message
    assert "huggingface-cli download" in message and "pretrained=False" in message
    with pytest.raises(ValueError, match="not a timm model name"):
        TimmViT("vit_no_such_model", pretrained=True)
    with pytest.raises(ValueError, match="needs a timm model_name"):
        TimmViT(None, pretrained=True, timm_kwargs=TINY)


def test_frame_vit_stays_importable_from_ego_proxies():
    import modules.ego_proxies as ego
    from modules.nets.vit import FrameViT

    assert ego.FrameViT is FrameViT
    net = ego.ViewNet((2, 3, 10, 10), num_classes=4, hidden=32, num_layers=1, backbone="vit", patch_size=4).eval()
    assert {k.split(".")[1] for k in net.state_dict() if k.startswith("backbone.")} == {"vit"}
    assert net(torch.rand(2, 2, 3, 10, 10)).shape == (2, 4)


# ----- the shared mask --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, ratio, kept", [(64, 0.75, 16), (64, 0.9, 6), (196, 0.95, 10), (196, 0.98, 4), (16, 0.0, 16)]
)
def test_random_mask_keeps_the_rounded_count(n, ratio, kept):
    m = random_mask(3, n, ratio, generator=torch.Generator().manual_seed(0))
    assert kept == round(n * (1 - ratio))
    assert m.ids_keep.shape == (3, kept) and m.mask.shape == (3, n)
    assert (m.mask.sum(1) == n - kept).all()
    # the kept ids are exactly the zeros of the mask
    for b in range(3):
        assert set(m.ids_keep[b].tolist()) == set((m.mask[b] == 0).nonzero().flatten().tolist())


def test_random_mask_is_a_function_of_its_noise():
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))
    a, b = random_mask(2, 16, 0.75, noise=noise), random_mask(2, 16, 0.75, noise=noise.clone())
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values()))
    # the smallest noise values are kept (argsort ascending), as the official random_masking
    assert set(a.ids_keep[0].tolist()) == set(noise[0].argsort()[:4].tolist())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(random_mask(2, 16, 0.5, generator=g1).mask, random_mask(2, 16, 0.5, generator=g2).mask)
    with pytest.raises(ValueError, match="noise must have shape"):
        random_mask(2, 15, 0.75, noise=noise)
    with pytest.raises(ValueError, match="mask ratio"):
        random_mask(2, 16, 1.0)


def test_ids_restore_inverts_the_shuffle():
    n = 12
    m = random_mask(2, n, 0.5, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(n, dtype=torch.float32).expand(2, n)[..., None]  # token = its own index
    visible = apply_mask(positions, m)
    filler = torch.full((2, n - m.num_visible, 1), -1.0)
    restored = torch.gather(torch.cat([visible, filler], 1), 1, m.ids_restore[..., None])[..., 0]
    expected = torch.where(m.mask.bool(), torch.tensor(-1.0), torch.arange(n, dtype=torch.float32))
    assert torch.equal(restored, expected)


def test_a_shared_mask_selects_the_same_patches_in_two_encoders():
    small, wide = tiny_encoder(32, seed=0), tiny_encoder(48, seed=1)
    m = small.random_mask(2, 0.75, generator=torch.Generator().manual_seed(0))
    x = images()
    removed = unpatchify(m.mask[..., None].expand(-1, -1, 8 * 8 * 3), 8)  # 1 on the removed patches' pixels
    x_removed_changed = x + removed * torch.rand_like(x)
    kept = m.ids_keep[0, 0].item()
    x_kept_changed = x.clone()
    r, c = divmod(kept, 4)
    x_kept_changed[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 0.5
    for enc in (small, wide):
        latent = enc(x, m)[0]
        assert latent.shape == (2, 1 + 4, enc.embed_dim)
        torch.testing.assert_close(enc(x_removed_changed, m)[0], latent)  # removed patches are never seen
        assert not torch.allclose(enc(x_kept_changed, m)[0][0], latent[0])  # a kept patch is


# ----- patches, positions, loss -----------------------------------------------------------------
def test_patchify_layout_and_round_trip():
    x = torch.rand(2, 3, 16, 24)
    p = patchify(x, 4)
    assert p.shape == (2, 4 * 6, 4 * 4 * 3)
    # patch (row 1, column 2), pixel (i=3, j=1), channel 2 sits at [(i*p + j)*C + c]
    assert p[1, 1 * 6 + 2, (3 * 4 + 1) * 3 + 2] == x[1, 2, 1 * 4 + 3, 2 * 4 + 1]
    torch.testing.assert_close(unpatchify(p, 4, grid=(4, 6)), x, rtol=0, atol=0)
    square = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(unpatchify(patchify(square, 4), 4), square, rtol=0, atol=0)
    with pytest.raises(ValueError, match="square grid"):
        unpatchify(p, 4)


def test_sincos_pos_embed_golden():
    emb = sincos_pos_embed_2d(8, (3, 4), cls_token=True)
    assert emb.shape == (1 + 12, 8) and torch.equal(emb[0], torch.zeros(8))
    # D=8: frequencies 1 and 1/100; first half the column (2), second half the row (1)
    row, col = 1.0, 2.0
    expected = [math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100)]
    expected += [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100)]
    torch.testing.assert_close(emb[1 + 1 * 4 + 2], torch.tensor(expected))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2)


def test_mae_pixel_loss_golden():
    # one channel, 2x4 image, patch 2: patch 0 = [1, 2, 3, 4], patch 1 = [5, 5, 5, 9]
    img = torch.tensor([[[[1.0, 2.0, 5.0, 5.0], [3.0, 4.0, 5.0, 9.0]]]])
    pred = torch.zeros(1, 2, 4)
    only_second = torch.tensor([[0.0, 1.0]])
    assert mae_pixel_loss(pred, img, only_second, norm_pix_loss=False).item() == pytest.approx((25 * 3 + 81) / 4)
    both = torch.ones(1, 2)
    assert mae_pixel_loss(pred, img, both, norm_pix_loss=False).item() == pytest.approx(((1 + 4 + 9 + 16) / 4 + 39) / 2)
    # a visible patch's prediction does not count
    pred_changed = pred.clone()
    pred_changed[0, 0] = 100.0
    assert mae_pixel_loss(pred_changed, img, only_second, norm_pix_loss=False).item() == pytest.approx(39.0)
    # norm_pix_loss: patch 1 has mean 6, unbiased variance 4 -> [-0.5, -0.5, -0.5, 1.5], squared mean 0.75
    assert mae_pixel_loss(pred, img, only_second, norm_pix_loss=True).item() == pytest.approx(0.75, rel=1e-5)
    m = PatchMask(torch.tensor([[0]]), torch.tensor([[0, 1]]), only_second)
    assert mae_pixel_loss(pred, img, m, norm_pix_loss=False).item() == pytest.approx(39.0)


# ----- encoder and decoder ----------------------------------------------------------------------
def test_encoder_intermediates_are_pre_norm_block_outputs():
    enc = tiny_encoder()
    assert not enc.vit.pos_embed.requires_grad
    torch.testing.assert_close(enc.vit.pos_embed[0], sincos_pos_embed_2d(32, 4, cls_token=True))
    x = images()
    m = enc.random_mask(2, 0.75, generator=torch.Generator().manual_seed(0))
    with FeatureTaps(enc, {"b0": "vit.blocks.0"}) as taps:
        latent, (first, last) = enc(x, m, indices=[0, -1])
    assert first.shape == last.shape == latent.shape == (2, 1 + 4, 32)
    torch.testing.assert_close(first, taps["b0"])
    torch.testing.assert_close(enc.vit.norm(last), latent)
    with pytest.raises(ValueError, match="out of range"):
        enc(x, m, indices=[2])


def test_encoder_weights_carry_over_to_timm_vit():
    enc = tiny_encoder()
    x = images()
    vit = enc.to_timm_vit().eval()
    torch.testing.assert_close(vit.forward_features(x), enc(x)[0])
    classifier = enc.to_timm_vit(num_classes=3, global_pool="avg")
    assert classifier(x).shape == (2, 3)


def test_decoder_hidden_state_after_block_k():
    enc, dec = tiny_encoder(), tiny_decoder(depth=4)
    x = images()
    m = enc.random_mask(2, 0.75, generator=torch.Generator().manual_seed(0))
    latent = enc(x, m)[0]
    seen = []
    handle = dec.decoder_blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with FeatureTaps(dec, {"b2": "decoder_blocks.1", "b4": "decoder_blocks.3"}) as taps:
        pred = dec(latent, m)
    handle.remove()
    # the first block sees CLS + the mask token (plus its position) at every removed patch, in raster order
    removed = m.mask[0].bool()
    filled = seen[0][0, 1:][removed] - dec.decoder_pos_embed[0, 1:][removed]
    torch.testing.assert_close(filled, dec.mask_token[0].expand_as(filled))
    kept = seen[0][0, 1:][~removed] - dec.decoder_pos_embed[0, 1:][~removed]
    torch.testing.assert_close(kept, dec.decoder_embed(latent[0, 1:])[m.ids_keep[0].argsort()])
    assert pred.shape == (2, 16, 8 * 8 * 3)
    hidden = dec.forward_hidden(latent, m, after_block=2)
    assert hidden.shape == (2, 1 + 16, 16)  # CLS + every patch, decoder width
    torch.testing.assert_close(hidden, taps["b2"])  # after block 2 = output of decoder_blocks[1]
    last = dec.forward_hidden(latent, m, after_block=4)
    torch.testing.assert_close(last, taps["b4"])
    torch.testing.assert_close(dec.decoder_pred(dec.decoder_norm(last))[:, 1:], pred)  # before decoder_norm
    assert mae_pixel_loss(pred, enc.normalize(x), m).isfinite()
    with pytest.raises(ValueError, match="after_block"):
        dec.forward_hidden(latent, m, after_block=0)
    with pytest.raises(ValueError, match="do not fit"):
        dec(latent[:, :3], m)


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_mae_export_round_trip(which):
    enc, dec = tiny_encoder(), tiny_decoder()
    x = images()
    m = enc.random_mask(2, 0.75, generator=torch.Generator().manual_seed(0))
    if which == "encoder":
        again = rebuilt(enc)
        torch.testing.assert_close(again(x, m)[0], enc(x, m)[0], rtol=0, atol=0)
    else:
        latent = enc(x, m)[0]
        again = rebuilt(dec)
        torch.testing.assert_close(again(latent, m), dec(latent, m), rtol=0, atol=0)


# ----- probes -----------------------------------------------------------------------------------
def test_tokens_to_map_layout():
    tokens = torch.randn(2, 2 + 6, 4)
    fmap = tokens_to_map(tokens, num_prefix_tokens=2, grid=(2, 3))
    assert fmap.shape == (2, 4, 2, 3)
    assert torch.equal(fmap[1, :, 1, 2], tokens[1, 2 + 1 * 3 + 2])
    with_cls = tokens_to_map(tokens, 2, (2, 3), concat_cls=True)
    assert with_cls.shape == (2, 8, 2, 3) and torch.equal(with_cls[0, 4:, 1, 0], tokens[0, 0])
    with pytest.raises(ValueError, match="prefix tokens"):
        tokens_to_map(tokens, 1, (2, 3))


def test_probes_output_at_input_size_and_only_the_head_trains():
    backbone = tiny_vit(reg_tokens=2, dynamic_img_size=True)
    seg = DenseProbe(backbone, SegmentationProbe(32, num_classes=6))
    depth_bins = DenseProbe(backbone, DepthProbe(64, bins=8, min_depth=0.5, max_depth=4.0), concat_cls=True)
    depth_reg = DenseProbe(backbone, DepthProbe(32, bins=1, min_depth=0.1))
    x = images(h=24, w=40)
    for probe in (seg, depth_bins, depth_reg):
        probe.train()
        assert not probe.backbone.training  # BatchNorm / dropout of the backbone never move
        trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith("head.") for n in trainable)
        assert trainable == {f"head.{n}" for n, _ in probe.head.named_parameters()}
    logits = seg(x)
    assert logits.shape == (2, 6, 24, 40)
    logits.sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert seg.head.conv.weight.grad is not None
    d = depth_bins(x)
    assert d.shape == (2, 1, 24, 40) and (d >= 0.5).all() and (d <= 4.0).all()
    r = depth_reg(x)
    assert r.shape == (2, 1, 24, 40) and (r > 0.1).all()


def test_probe_heads_export_round_trip():
    fmap = torch.randn(2, 32, 4, 4)
    for head in (SegmentationProbe(32, 6), DepthProbe(32, bins=16)):
        head.eval()
        again = rebuilt(head)
        torch.testing.assert_close(again(fmap, size=(32, 32)), head(fmap, size=(32, 32)), rtol=0, atol=0)


def test_dense_probe_on_an_mae_encoder():
    probe = DenseProbe(tiny_encoder(), SegmentationProbe(32, 3)).eval()
    assert probe(images()).shape == (2, 3, 32, 32)


def test_a_pretrained_vit_exports_a_spec_that_rebuilds_without_a_download(monkeypatch):
    """The spec of a ViT built with pretrained=True records pretrained=False: zoo.load rebuilds the network
    and fills it from the entry's weights, never from a hub."""
    import timm

    from zoo.specs import build, module_spec

    real = timm.create_model
    calls = []

    def fake(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=16, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    net = TimmViT("vit_tiny_patch16_224", pretrained=True)
    spec = module_spec(net)
    assert spec["init_args"]["pretrained"] is False
    build(spec)
    assert calls == [True, False]
