"""Every published entry computes the same function after a refactor: a digest of its output on a fixed
input is pinned here. Outputs are rounded to 1e-4 before hashing, so a change of thread count or CPU
kernel path does not flip the digest while any real change of the network does. A republished entry
updates its digest in the same commit (``python tests/test_entry_digests.py`` prints the current ones)."""

from __future__ import annotations

import hashlib

import pytest
import torch

import zoo
from zoo.units import hu_to_mu, mu_to_hu

PINNED = {
    "codec-teacher-librispeech": "cd82562e5bcbb108",  # republished with the official stem norm and SiLU
    "codec-teacher-librispeech-r1": "f657e3684957663b",  # the first release, as published
    "distilcodec-librispeech": "0db26815c67ea74d",
    "mae-vit-cifar10": "2eaa9e0ee1c2b437",
    "mae-vit-cifar10-ft": "56c164ef8375dd77",
    "dmae-vit-cifar10": "4227bd6877f352ac",
    "g2sd-vit-cifar10": "07394fd82b7530c3",
    "metric-prompt-teacher-scenes": "7880f0ee7628590e",
    "ffg2m-cora-gcn-mlp": "28daf9f038045924",
    "gcn-cora": "74b82f71a3213071",
    "gcn-cora-ind": "5152b41ae13cc48f",
    "gcn-csbm": "f1f15afefe0289d2",
    "gloredi-phantoms-18v": "81bb56d70a7561c6",  # republished in HU: same tensors, outputs within 0.002 HU
    "mirage-imdb-binary": "c9dfa7b8ef044ab0",
    "mirage-mutag": "aac3ad27ef970215",
    "mirage-nci1": "198f9c7210b07ecb",
    "uniego-uci-features-fac": "0feeb647fea655f6",
    "uniego-uci-features-fou": "843fb151d5f4f08b",
    "uniego-uci-features-kar": "c184e125c37dc352",
    "uniego-uci-features-mor": "56d8dd473c68a12f",
    "uniego-uci-features-zer": "9a907cfdf3c6618e",
    "uniego-uci-init": "2065f47d10766d6c",
    "uniego-uci-mfeat": "d2a3f9584e98b7f9",  # republished from the zoo artefacts: the seed-0 SPD-from-soup run
    "uniego-uci-proxy-fac": "eed08a719cce2c6f",
    "uniego-uci-proxy-fou": "44c4593317b91652",
    "uniego-uci-proxy-kar": "6a18b28370c8f3d9",
    "uniego-uci-proxy-mor": "8495eadd14020b00",
    "uniego-uci-proxy-outputs": "7642e5deb3712cbe",
    "uniego-uci-proxy-zer": "75e60ad2a4c9dff1",
    "uniego-uci-soup": "eb37c49985cec884",
    "uniego-uci-teacher-fac": "c473215a19da09a0",
    "uniego-uci-teacher-fou": "11184488a9b3f7ae",
    "uniego-uci-teacher-kar": "6a1597d468b3a374",
    "uniego-uci-teacher-mor": "8c369bfd60bb8eb1",
    "uniego-uci-teacher-zer": "92fdf5783b064c9f",
    "uniego-uci-uniform": "98e25a50714308dd",
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
            out = loaded(wav)
            return torch.cat([out["audio"].flatten(), out["codes"].flatten().float()])
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
        if cls in ("MaskedAutoencoder", "TimmViT", "DistilledViT", "RegisterViT"):  # images in [0, 1]
            images = torch.rand(2, 3, 32, 32, generator=g)
            if cls == "MaskedAutoencoder":  # every patch predicted under one fixed mask
                from modules.nets import random_mask

                noise = torch.rand(2, loaded.encoder.num_patches, generator=g)
                return loaded(images, random_mask(2, loaded.encoder.num_patches, 0.75, noise=noise))
            if cls == "RegisterViT":
                return loaded.dense_features(images)
            return loaded(images)
    raise AssertionError(f"no fixed input for {name} ({cls}); add one")


def digest(t: torch.Tensor) -> str:
    rounded = torch.round(t.double() * 1e4).to(torch.int64).numpy().tobytes()
    return hashlib.sha256(rounded).hexdigest()[:16]


def test_every_entry_is_pinned():
    assert sorted(PINNED) == zoo.list(), "a new or removed entry: add or drop its digest in PINNED"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_entry_output_is_unchanged(name):
    assert digest(entry_output(name)) == PINNED[name], f"{name} computes another function than it was published with"


if __name__ == "__main__":
    for entry in zoo.list():
        print(f'    "{entry}": "{digest(entry_output(entry))}",')
