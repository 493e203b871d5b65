"""SpeechDataModule: the embedded synthetic speech, LibriSpeech-style folders (odd rates, stereo, short, empty and
broken files), speaker-disjoint splits, reproducible crops, and the local LibriSpeech copy when present."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SHARED_DATA

from datamodules.audio import SpeechDataModule, speaker_of, synthetic_speech

LIBRISPEECH = SHARED_DATA / "librispeech"
SR = 16000


def speakers(utterances) -> set[str]:
    return {u.speaker for u in utterances}


@pytest.fixture(scope="module")
def default_dm() -> SpeechDataModule:
    dm = SpeechDataModule(segments_per_epoch=10, batch_size=4, val_speakers=4, seed=3)
    dm.setup()
    return dm


def test_embedded_default_batches_splits_and_stats(default_dm):
    dm = default_dm
    train = list(dm.train_dataloader())
    assert [tuple(b.shape) for b in train] == [(4, 1, 16384), (4, 1, 16384), (2, 1, 16384)]
    assert all(b.dtype == torch.float32 for b in train)
    val, test = next(iter(dm.val_dataloader())), next(iter(dm.test_dataloader()))
    assert val.shape[:2] == (1, 1) and test.shape[:2] == (1, 1) and 1.5 * SR <= test.shape[-1] <= 3.5 * SR
    pred = next(iter(dm.predict_dataloader()))
    assert pred["path"] == dm.test_set[0].path and isinstance(pred["path"], str)
    assert torch.equal(pred["audio"], dm.test_set[0].audio.view(1, 1, -1))

    tr, va, te = speakers(dm.train_set), speakers(dm.val_set), speakers(dm.test_set)
    assert (len(tr), len(va), len(te)) == (20, 4, 6)
    assert not (tr & va) and not (tr & te) and not (va & te)
    s = dm.stats
    assert (s["train_files"], s["val_files"], s["test_files"]) == (80, 16, 12)
    assert (s["train_speakers"], s["val_speakers"], s["test_speakers"]) == (20, 4, 6)
    assert s["train_seconds"] == pytest.approx(sum(u.audio.numel() for u in dm.train_set) / SR)
    assert s["skipped"] == s["downmixed"] == s["resampled"] == s["padded"] == 0


def test_synthetic_speech_is_deterministic_and_speech_like(default_dm):
    again = synthetic_speech(2, 1, SR, first_speaker=24)
    for a, b in zip(again, default_dm.test_set[::2]):
        assert a.path == b.path and torch.equal(a.audio, b.audio)
    audio = default_dm.train_set[0].audio
    assert audio.abs().max() == pytest.approx(0.5, abs=1e-4)
    spectrum = torch.fft.rfft(audio).abs() ** 2
    freqs = torch.fft.rfftfreq(audio.numel(), 1 / SR)
    assert spectrum[freqs < 4000].sum() > 0.9 * spectrum.sum()  # voiced energy dominates, as in speech
    frame_rms = audio[: audio.numel() // 320 * 320].view(-1, 320).pow(2).mean(1).sqrt()
    assert (frame_rms < 0.02 * frame_rms.max()).any()  # pauses between syllables
    other = [u.audio for u in default_dm.train_set if u.speaker != default_dm.train_set[0].speaker][0]
    assert not torch.equal(audio[:1000], other[:1000])


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_crops_are_seeded_per_epoch_and_follow_lightning_epochs(default_dm):
    loader = default_dm.train_dataloader()
    epoch0 = torch.cat(list(loader))
    assert torch.equal(epoch0, torch.cat(list(default_dm.train_dataloader())))
    loader.sampler.set_epoch(1)
    assert not torch.equal(epoch0, torch.cat(list(loader)))
    utt, offset = next(iter(loader.sampler))
    assert torch.equal(loader.dataset[(utt, offset)][0], default_dm.train_set[utt].audio[offset : offset + 16384])

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch.clone())
            return (self.w * batch.mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    runs = []
    for _ in range(2):
        model = Recorder()
        trainer = L.Trainer(
            max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        )  # fmt: skip
        trainer.fit(model, default_dm)
        runs.append(model.seen)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[0][1])  # Lightning's set_epoch reached the sampler


def test_val_speakers_follow_seed_and_must_leave_training_speakers(default_dm):
    other = SpeechDataModule(val_speakers=4, seed=4)
    other.setup()
    assert speakers(other.val_set) != speakers(default_dm.val_set)
    assert speakers(other.test_set) == speakers(default_dm.test_set)
    with pytest.raises(ValueError, match="val_speakers=24 leaves no training speaker"):
        SpeechDataModule(val_speakers=24).setup()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        SpeechDataModule(batch_size=0)


def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate)
    return path


def tone(seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.fixture
def libri_root(tmp_path: Path) -> Path:
    """LibriSpeech nesting: a 16 kHz mono file, a 22.05 kHz stereo wav, a short clip, an empty and a broken file."""
    train = tmp_path / "train-clean"
    write(train / "11/100/11-100-0000.flac", tone(1.5, SR), SR)
    stereo = np.stack([tone(1.2, 22050, 0.8), np.zeros(round(1.2 * 22050), np.float32)], axis=1)
    write(train / "12/200/12-200-0000.wav", stereo, 22050)
    write(train / "13/300/13-300-0000.flac", tone(0.3, SR), SR)
    (train / "13/300/13-300-0001.flac").write_bytes(b"")
    (train / "13/300/13-300-0002.flac").write_bytes(b"not audio at all" * 64)
    (train / "13/300/13-300.trans.txt").write_text("13-300-0000 HELLO\n")
    write(tmp_path / "test-other/21/400/21-400-0000.flac", tone(2.0, SR), SR)
    write(tmp_path / "test-other/22/500/22-500-0000.flac", tone(1.0, SR), SR)
    return tmp_path


def test_librispeech_layout_reads_resamples_downmixes_pads_and_skips(libri_root):
    before = sorted(libri_root.rglob("*"))
    dm = SpeechDataModule(str(libri_root), val_speakers=0, segments_per_epoch=64, batch_size=64, max_eval_seconds=1.5)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable or empty audio files: .*13-300-0001\.flac"):
        dm.setup()
    assert sorted(libri_root.rglob("*")) == before  # nothing written into root
    assert dm.stats == {
        **{"train_files": 3, "train_seconds": 3.0, "train_speakers": 3},
        **{"val_files": 0, "val_seconds": 0.0, "val_speakers": 0},
        **{"test_files": 2, "test_seconds": 2.5, "test_speakers": 2},
        **{"skipped": 2, "downmixed": 1, "resampled": 1, "padded": 1},
    }
    assert len(dm.skipped_paths) == 2
    stereo = next(u for u in dm.train_set if u.speaker == "12")
    assert stereo.audio.dtype == torch.float32 and stereo.audio.shape == (round(1.2 * SR),)
    assert stereo.audio.abs().max() == pytest.approx(0.4, abs=0.02)  # mean of 0.8 * tone and silence
    assert [b.shape[-1] for b in dm.test_dataloader()] == [int(1.5 * SR), SR]  # first file cut to 1.5 s

    crops = next(iter(dm.train_dataloader()))[:, 0]
    short = (crops[:, 4800:] == 0).all(1) & (crops[:, :4800] != 0).any(1)
    assert short.any()  # the 0.3 s clip, zero-padded to a full segment

    wav = str(libri_root / "train-clean/12/200/12-200-0000.wav")
    dm_pred = SpeechDataModule(str(libri_root), predict_files=[wav])
    (item,) = list(dm_pred.predict_dataloader())
    assert item["path"] == wav and item["audio"].shape == (1, 1, round(1.2 * SR))
    with pytest.raises(FileNotFoundError, match="predict file .*missing.wav"):
        list(SpeechDataModule(predict_files=[str(libri_root / "missing.wav")]).predict_dataloader())


def test_unusable_missing_and_overlapping_folders_raise(libri_root, tmp_path):
    broken = tmp_path / "broken"
    (broken / "train-clean").mkdir(parents=True)
    for i in range(2):
        (broken / f"train-clean/7-1-000{i}.flac").write_bytes(b"\x00garbage" * i)
    with pytest.raises(ValueError, match=r"no usable audio in .*broken/train-clean: none of its 2 audio files"):
        SpeechDataModule(str(broken)).setup()
    with pytest.raises(FileNotFoundError, match=r"nowhere/train-clean does not exist.*openslr.org/12.*root=None"):
        SpeechDataModule(str(tmp_path / "nowhere")).setup()
    with pytest.raises(FileNotFoundError, match=r"test-clean does not exist"):
        SpeechDataModule(str(libri_root), test_dir="test-clean", val_speakers=0).setup()

    write(libri_root / "test-other/12/201/12-201-0000.flac", tone(1.0, SR), SR)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"speakers \['12'\] .*speaker-disjoint"):
        SpeechDataModule(str(libri_root), val_speakers=0).setup()


def test_speaker_of_librispeech_names():
    assert speaker_of("/data/train-clean/103-1240-0000.flac") == "103"
    assert speaker_of("test-other/1688/142285/1688-142285-0001.flac") == "1688"


@pytest.mark.skipif(not LIBRISPEECH.is_dir(), reason=f"no local LibriSpeech copy at {LIBRISPEECH}")
def test_local_librispeech_copy():
    dm = SpeechDataModule(str(LIBRISPEECH), val_speakers=8, max_eval_seconds=0.25, segments_per_epoch=4)
    dm.setup()
    tr, va, te = speakers(dm.train_set), speakers(dm.val_set), speakers(dm.test_set)
    assert len(va) == 8 and len(te) >= 1 and not (tr & va) and not (tr & te) and not (va & te)
    assert dm.stats["resampled"] == dm.stats["downmixed"] == 0
    assert {sf.info(u.path).samplerate for u in dm.test_set + dm.val_set[:3] + dm.train_set[:3]} == {SR}
    assert max(u.audio.numel() for u in dm.test_set + dm.val_set) <= SR // 4
    assert next(iter(dm.train_dataloader())).shape == (4, 1, 16384)
