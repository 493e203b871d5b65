"""Every published entry computes the same function after a refactor: a fingerprint of its output on a
fixed input is pinned here. A fingerprint is a few numbers (size, mean, std, largest magnitude and four
seeded random projections of the flattened output, each divided by sqrt(size)), compared with a
tolerance of 1e-3 of the output's root mean square. A sha256 of rounded outputs was tried first and
broke: a CPU with another kernel path (or another thread count) moves outputs by ~1e-7, which flips
the rounding of some of hundreds of values, so a hash cannot tell noise from change. Projections can:
noise moves them by about the per-value error, any real change of the network by about the output's
scale. Discrete outputs (codec codes) are fingerprinted through continuous ones: the encoder's latent
and the decoding of fixed codes. A republished entry updates its fingerprint in the same commit
(``python tests/test_entry_digests.py`` prints the current ones)."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.units import hu_to_mu, mu_to_hu

PINNED: dict[str, tuple[int, list[float]]] = {
    "codec-teacher-librispeech": (
        3072,
        [0.01200674, 0.5788, 2.308079, -0.3196566, 0.3092735, 0.2949477, -0.2594226],
    ),  # republished with the official stem norm and SiLU
    "codec-teacher-librispeech-r1": (
        3072,
        [-0.0002020099, 0.5750844, 2.458433, -0.3699815, 0.3599171, 0.2571401, -0.1177209],
    ),  # the first release, as published
    "distilcodec-librispeech": (3072, [-0.002058393, 0.5726245, 2.754015, -0.0666036, 0.4300114, 0.4955103, 0.1080738]),
    "mae-vit-cifar10": (6144, [-0.001022514, 0.6670557, 3.105848, 0.8888883, -1.274832, -0.2099107, 0.5077006]),
    "mae-vit-cifar10-ft": (20, [0.06013945, 1.322623, 2.708181, -2.59732, -0.7896933, -0.8979311, -1.53157]),
    "dmae-vit-cifar10": (20, [0.09022839, 1.521107, 3.277905, -0.2297944, 1.478442, -2.412045, -2.539311]),
    "g2sd-vit-cifar10": (20, [0.07052838, 1.69063, 3.065598, -0.6169076, 0.3734747, -2.522201, -2.166468]),
    "phreg-vit-camvid": (24576, [0.487867, 5.075138, 23.31091, -6.038982, 4.814222, -2.582401, 2.630043]),
    "collab-deeplabv3p-camvid": (
        22528,
        [-0.01721695, 1.484501, 3.430429, -0.06542165, -2.100065, 2.477754, -0.1070041],
    ),
    "collab-segformer-camvid": (22528, [-0.6824829, 1.114947, 2.97072, 0.6087312, -0.5964963, 0.9868467, 0.2865726]),
    "metric-prompt-teacher-scenes": (2048, [3.976812, 1.2705, 8.550118, -3.967892, 4.294361, 0.1536715, -1.62133]),
    "ffg2m-cora-gcn-mlp": (280, [-0.3612913, 1.017588, 2.852504, 0.4255054, -0.06399429, 0.3722474, -1.345815]),
    "gcn-cora": (280, [-0.5351265, 1.156206, 3.374917, -0.5840668, -0.513072, 0.2601889, -2.255639]),
    "gcn-cora-ind": (280, [-0.5262234, 1.25762, 2.960186, 0.1162163, -1.509871, 0.9466124, -2.846201]),
    "gcn-csbm": (280, [-0.07939859, 0.2084336, 0.8839378, -0.01345155, 0.1724852, -0.0229828, 0.06428481]),
    "gloredi-phantoms-18v": (
        8192,
        [0.1704769, 0.03633841, 0.2780928, -0.004774121, -0.1101605, 0.08914357, 0.1421473],
    ),  # republished in HU: same tensors, outputs within 0.002 HU
    "mirage-imdb-binary": (1651240, [1.065172, 16.81778, 870, -6.616874, 9.991482, 1.720036, 2.009894]),
    "mirage-mutag": (3760, [1.502128, 3.850767, 26, 3.315802, 8.597412, -0.2740946, -0.6414962]),
    "mirage-nci1": (3137, [0.1925406, 1.087338, 14, 2.943588, 1.21715, 1.330645, 0.9620645]),
    "uniego-uci-features-fac": (256000, [0.6168472, 0.8913124, 6.266768, 1.207117, 0.1099573, 0.2495862, 2.438859]),
    "uniego-uci-features-fou": (256000, [0.5029684, 0.6778337, 6.123518, -0.7847478, -0.4630989, 1.340441, 0.7293705]),
    "uniego-uci-features-kar": (256000, [0.5548727, 0.6978671, 4.538457, 0.4613853, 1.627486, 0.7583668, 1.68913]),
    "uniego-uci-features-mor": (256000, [0.3967727, 0.6365383, 5.209356, 0.4050683, -0.9252877, 0.342751, -0.01316848]),
    "uniego-uci-features-zer": (256000, [0.4631128, 0.65154, 4.81462, 0.8043067, 0.3325347, 0.4914917, -0.2536676]),
    "uniego-uci-init": (40, [0.1412004, 1.484659, 3.47614, -2.26637, -1.265145, -0.3365816, -1.863093]),
    "uniego-uci-mfeat": (
        40,
        [0.09318573, 1.784003, 4.436254, -1.565762, -1.100539, -0.6113779, -1.805875],
    ),  # republished from the zoo artefacts: the seed-0 SPD-from-soup run
    "uniego-uci-proxy-fac": (40, [0.1570745, 1.82731, 5.054307, -3.114424, -1.079904, -0.7661961, -2.277159]),
    "uniego-uci-proxy-fou": (40, [0.1890039, 1.825159, 4.683108, -2.480289, -1.457492, -0.7915817, -2.3711]),
    "uniego-uci-proxy-kar": (40, [0.1854991, 1.820052, 4.52821, -2.42636, -1.496525, -0.7311486, -2.183885]),
    "uniego-uci-proxy-mor": (40, [0.1242132, 1.545678, 3.862348, -2.499825, -1.982611, -0.5711108, -2.420349]),
    "uniego-uci-proxy-outputs": (829200, [2.350707, 43.96133, 1999, 58.70246, 20.49708, -38.97731, 63.64014]),
    "uniego-uci-proxy-zer": (40, [0.1706724, 1.9612, 5.019967, -2.628086, -1.491893, -0.6798055, -2.911093]),
    "uniego-uci-soup": (40, [0.1639867, 1.762721, 4.636455, -2.587081, -1.303478, -0.7165355, -2.353468]),
    "uniego-uci-teacher-fac": (40, [-0.3769981, 5.897354, 13.71044, 7.5513, -3.027767, 6.411944, -6.027578]),
    "uniego-uci-teacher-fou": (40, [0.1365763, 9.212116, 23.198, 5.494819, 11.82765, -3.206034, -6.078633]),
    "uniego-uci-teacher-kar": (40, [0.1713145, 5.796136, 12.96266, -4.745081, -5.57797, -1.885635, -0.4811246]),
    "uniego-uci-teacher-mor": (40, [-0.06507956, 7.790628, 20.03302, -13.23849, -25.90186, -0.7712988, -4.710038]),
    "uniego-uci-teacher-zer": (40, [0.03042409, 5.429758, 13.0128, -2.583416, 7.308746, 5.791002, 3.157947]),
    "uniego-uci-uniform": (40, [0.1618053, 1.753775, 4.629509, -2.614593, -1.303099, -0.7111684, -2.349547]),
}


def _features(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(40, width, generator=g) < 0.05).float()  # bag-of-words-like rows, as Planetoid gives
    edge_index = torch.randint(0, 40, (2, 160), generator=g)
    return x, torch.cat([edge_index, edge_index.flip(0)], 1)


def entry_output(name: str) -> torch.Tensor:
    """The entry's output on a fixed input of the kind its reader gives (a dataset entry: its tensors)."""
    loaded = zoo.load(name)
    g = torch.Generator().manual_seed(0)
    if zoo.get(name).kind == "dataset":
        return torch.cat([torch.cat([d.x.flatten().float(), d.edge_index.flatten().float()]) for d in loaded])
    if zoo.get(name).kind == "teacher-outputs":
        return torch.cat([loaded.outputs[k].flatten().float() for k in sorted(loaded.outputs)])
    cls = type(loaded).__name__
    with torch.no_grad():
        if cls == "Codec":
            wav = 0.3 * torch.sin(torch.linspace(0, 800, 4096))[None, None]
            wav = wav + 0.05 * torch.randn(1, 1, 4096, generator=g)
            q = loaded.quantizer
            codes = torch.randint(0, q.codebook_size, (1, q.groups, 8, q.residual), generator=g)
            return torch.cat([loaded.encoder(loaded.mel(wav)).flatten(), loaded.decode(codes).flatten()])
        if cls in ("MLP", "GNN"):
            x, edge_index = _features(loaded.init_args["in_channels"])
            return loaded(x, edge_index)
        if cls == "Reconstructor":  # takes and returns HU (the input contract)
            return hu_to_mu(loaded(mu_to_hu(torch.rand(2, 1, 64, 64, generator=g) * 0.3)), clip=False)
        if cls == "ViewNet":
            return loaded(torch.randint(0, 7, (4, *loaded.init_args["in_shape"]), generator=g).float())
        if cls == "PromptDepthNet":  # images in [0, 1] and a 5% prompt of a fixed depth map
            from modules.metric_depth import sample_prompt

            depth = 1 + 9 * torch.rand(2, 32, 32, generator=g)
            return loaded(torch.rand(2, 3, 32, 32, generator=g), sample_prompt(depth, 0.05, g))
        if cls in ("MaskedAutoencoder", "TimmViT", "DistilledViT", "RegisterViT", "DeepLabV3Plus", "SegFormer"):
            images = torch.rand(2, 3, 32, 32, generator=g)
            if cls == "MaskedAutoencoder":  # every patch predicted under one fixed mask
                from modules.nets import random_mask

                noise = torch.rand(2, loaded.encoder.num_patches, generator=g)
                return loaded(images, random_mask(2, loaded.encoder.num_patches, 0.75, noise=noise))
            if cls == "RegisterViT":
                return loaded.dense_features(images)
            return loaded(images)
    raise AssertionError(f"no fixed input for {name} ({cls}); add one")


def fingerprint(t: torch.Tensor) -> tuple[int, list[float]]:
    """(size, [mean, std, max |value|, four seeded projections / sqrt(size)]) of ``t`` in float64."""
    t = t.detach().double().flatten()
    n = t.numel()
    directions = torch.randn(4, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    return n, [t.mean().item(), t.std().item(), t.abs().max().item(), *(directions @ t / n**0.5).tolist()]


def same_function(got: tuple[int, list[float]], pinned: tuple[int, list[float]]) -> bool:
    (n, values), (n_pinned, pinned_values) = got, pinned
    rms = (pinned_values[0] ** 2 + pinned_values[1] ** 2) ** 0.5
    return n == n_pinned and all(abs(a - b) <= 1e-3 * rms + 1e-9 for a, b in zip(values, pinned_values))


def test_fingerprint_tells_noise_from_change():
    t = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    pinned = fingerprint(t)
    assert same_function(fingerprint(t + 1e-6 * torch.randn(3000)), pinned)  # another kernel path
    changed = t.clone()
    changed[:300] *= 1.01  # one layer of ten off by 1%
    assert not same_function(fingerprint(changed), pinned)
    assert not same_function(fingerprint(t[:-1]), pinned)


def test_every_entry_is_pinned():
    assert sorted(PINNED) == zoo.list(), "a new or removed entry: add or drop its digest in PINNED"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_entry_output_is_unchanged(name):
    got = fingerprint(entry_output(name))
    assert same_function(got, PINNED[name]), f"{name} computes another function than it was published with: {got}"


if __name__ == "__main__":
    for entry in zoo.list():
        n, values = fingerprint(entry_output(entry))
        print(f'    "{entry}": ({n}, [{", ".join(f"{v:.7g}" for v in values)}]),')
