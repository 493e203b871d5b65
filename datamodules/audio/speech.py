"""Speech datamodule for neural audio codecs (DistilCodec): LibriSpeech-style folders of *.flac / *.wav, or an
embedded synthetic speech-like default that needs no download."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.base import BaseDataModule
from datamodules.splits import grouped_split

__all__ = ["SpeechDataModule", "Utterance", "read_audio", "speaker_of", "synthetic_speech"]

AUDIO_SUFFIXES = (".flac", ".wav")
SYNTHETIC_SIZES = {"train": (24, 4), "test": (6, 2)}  # split -> (speakers, utterances per speaker)
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]])


@dataclass
class Utterance:
    """One utterance: its path (or a ``synthetic/...`` name), speaker id and mono float32 audio [T]."""

    path: str
    speaker: str
    audio: Tensor


def speaker_of(path: str | Path) -> str:
    """The speaker id of a LibriSpeech file: the first ``-``-separated field of its stem (``103-1240-0000``)."""
    return Path(path).stem.split("-")[0]


def read_audio(path: str | Path, sample_rate: int) -> tuple[Tensor, bool, bool]:
    """Read ``path`` with soundfile as mono float32 [T] at ``sample_rate``.

    Returns:
        (audio, downmixed, resampled): multi-channel audio is averaged to mono, other rates are resampled
        with ``torchaudio.functional.resample``.

    Raises:
        sf.LibsndfileError (a RuntimeError) when the file cannot be decoded, ValueError when it has no samples
        or a NaN/inf sample (a float WAV can hold them; they would train to NaN or fail inside PESQ).
    """
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    if data.size == 0:
        raise ValueError(f"{path} has no samples")
    finite = np.isfinite(data)
    if not finite.all():
        raise ValueError(f"{path} has {data.size - int(finite.sum())} non-finite samples (NaN/inf) of {data.size}")
    audio = torch.from_numpy(data.mean(axis=1, dtype=np.float32))
    if rate != sample_rate:
        audio = torchaudio.functional.resample(audio, int(rate), sample_rate)
    return audio.contiguous(), data.shape[1] > 1, rate != sample_rate


def _utterance_audio(rng: np.random.Generator, f0: float, scale: float, sr: int) -> np.ndarray:
    """One speech-like utterance (~1.5-3 s): syllables of a voiced vowel glide, optionally led by a fricative,
    separated by short silences; the glottal source and noise are shaped per 128-sample hop by formant
    envelopes."""
    target, pieces = rng.uniform(1.5, 3.0) * sr, []  # pieces: (n, voiced?, f0 ramp, formants start/end, fric Hz)
    while sum(p[0] for p in pieces) < target:
        if rng.random() < 0.4:
            pieces.append((int(rng.uniform(0.05, 0.14) * sr), False, None, None, rng.uniform(2500, 6000)))
        start, end = scale * _VOWELS[rng.integers(5)], scale * _VOWELS[rng.integers(5)]
        ramp = f0 * np.exp(rng.normal(0, 0.1, 2))
        pieces.append((int(rng.uniform(0.12, 0.32) * sr), True, ramp, (start, end), 0.0))
        pieces.append((int(rng.uniform(0.03, 0.12) * sr), None, None, None, 0.0))  # silence
    n = sum(p[0] for p in pieces)
    f0_t, voiced, unvoiced = np.full(n, f0), np.zeros(n), np.zeros(n)
    formants, fric = np.tile(scale * _VOWELS[0].astype(float), (n, 1)), np.full(n, 4000.0)
    pos = 0
    for length, kind, ramp, glide, fric_hz in pieces:
        sl, t = slice(pos, pos + length), np.linspace(0.0, 1.0, length)
        envelope = np.sin(np.pi * t) ** 0.5
        if kind is True:
            f0_t[sl] = ramp[0] + (ramp[1] - ramp[0]) * t
            formants[sl] = glide[0] + np.outer(t, glide[1] - glide[0])
            voiced[sl] = envelope
        elif kind is False:
            unvoiced[sl], fric[sl] = 0.3 * envelope, fric_hz
        pos += length
    knots = np.arange(0, n + 400, 400)  # f0 jitter: a smooth random wobble of about 1%
    jitter = np.interp(np.arange(n), knots, rng.normal(0, 0.01, knots.size))
    phase = np.cumsum(f0_t * (1 + jitter)) / sr % 1.0
    flow = np.where(phase < 0.6, 0.5 - 0.5 * np.cos(np.pi * phase / 0.6), np.cos(np.pi * (phase - 0.6) / 0.6))
    flow = np.where(phase < 0.9, flow, 0.0)  # Rosenberg glottal pulse; its derivative ~ lip radiation
    source = np.diff(flow, prepend=0.0) * sr / f0_t * voiced  # unit-scale slope whatever the f0
    noise = rng.normal(0, 1, n) * unvoiced

    # Time-varying filtering by a short-time Fourier transform (Hann, 4x overlap-add), vectorised over frames.
    n_fft, hop, pad = 512, 128, 256
    frames = -(-n // hop) + 1
    padded = np.zeros((2, (frames + 3) * hop))
    padded[:, pad : pad + n] = source, noise
    window = np.hanning(n_fft + 1)[:-1]
    spec = np.fft.rfft(np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop] * window)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)  # [F]
    centres = np.minimum(np.arange(frames) * hop, n - 1)[:, None]  # [M, 1]
    formant_gain = sum(
        gain / (1 + ((freqs - formants[centres, j]) / (0.5 * width)) ** 2)
        for j, (gain, width) in enumerate(((1.0, 90.0), (0.5, 110.0), (0.25, 160.0)))
    )
    fric_gain = np.exp(-0.5 * ((freqs - np.minimum(fric[centres], 0.45 * sr)) / 800.0) ** 2)
    shaped = np.fft.irfft(spec[0] * formant_gain + spec[1] * fric_gain, n_fft) * window  # [M, n_fft]
    out = np.zeros((frames + 3, hop))
    for k in range(n_fft // hop):
        out[k : k + frames] += shaped[:, k * hop : (k + 1) * hop]
    audio = out.reshape(-1)[pad : pad + n] / 1.5  # periodic Hann squared sums to 1.5 at 4x overlap
    audio += rng.normal(0, 1e-4 * np.abs(audio).max(), n)  # a faint noise floor instead of digital silence
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def synthetic_speech(
    num_speakers: int, utterances: int, sample_rate: int = 16000, first_speaker: int = 0, seed: int = 0
) -> list[Utterance]:
    """Deterministic speech-like utterances, named ``synthetic/spkNNN-NNNN`` (speaker id ``spkNNN``).

    Speaker ``first_speaker + i`` has a base f0 in 90-250 Hz and a formant scale that grows with it
    (0.85-1.25, like men/women/children); both and the utterances are drawn from ``seed`` and the indices.
    """
    out = []
    for s in range(first_speaker, first_speaker + num_speakers):
        rng = np.random.default_rng([seed, s])
        f0 = rng.uniform(90, 250)
        scale = 0.85 + 0.35 * (f0 - 90) / 160 + rng.normal(0, 0.03)
        for u in range(utterances):
            audio = _utterance_audio(np.random.default_rng([seed, s, u]), f0, scale, sample_rate)
            out.append(Utterance(f"synthetic/spk{s:03d}-{u:04d}", f"spk{s:03d}", torch.from_numpy(audio)))
    return out


class _CropSampler(Sampler):
    """Yields ``num_crops`` (utterance, offset) pairs per epoch: utterances drawn proportional to their length,
    offsets uniform; the draw is seeded by (seed, epoch), and Lightning calls :meth:`set_epoch` each epoch."""

    def __init__(self, lengths: Sequence[int], segment: int, num_crops: int, seed: int) -> None:
        self.lengths, self.segment, self.num_crops = torch.tensor(lengths), segment, num_crops
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_crops

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        utts = torch.multinomial(self.lengths.double(), self.num_crops, replacement=True, generator=g)
        room = (self.lengths[utts] - self.segment + 1).clamp(min=1)
        offsets = (torch.rand(self.num_crops, generator=g, dtype=torch.float64) * room).long()
        return iter(zip(utts.tolist(), offsets.tolist()))


class _Crops(Dataset):
    """``dataset[(utterance, offset)]`` -> float32 [1, segment], zero-padded past the end of the utterance."""

    def __init__(self, utterances: list[Utterance], segment: int) -> None:
        self.utterances, self.segment = utterances, segment

    def __getitem__(self, index: tuple[int, int]) -> Tensor:
        utt, offset = index
        crop = self.utterances[utt].audio[offset : offset + self.segment]
        return torch.nn.functional.pad(crop, (0, self.segment - crop.numel())).unsqueeze(0)


class _Whole(Dataset):
    """Whole utterances, each float32 [1, T] (or ``{"audio", "path"}`` when ``with_path``)."""

    def __init__(self, utterances: list[Utterance], with_path: bool = False) -> None:
        self.utterances, self.with_path = utterances, with_path

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> Any:
        utt = self.utterances[i]
        return {"audio": utt.audio.unsqueeze(0), "path": utt.path} if self.with_path else utt.audio.unsqueeze(0)


class _PredictFiles(Dataset):
    """The user's ``predict_files``, read on demand by :func:`read_audio`; an unreadable file raises."""

    def __init__(self, paths: Sequence[str], sample_rate: int) -> None:
        self.paths, self.sample_rate = [str(p) for p in paths], sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not Path(self.paths[i]).is_file():
            raise FileNotFoundError(f"predict file {self.paths[i]} does not exist")
        if self.paths[i].endswith(".safetensors"):  # tokens written by modules.codec.CodecWriter: decode them
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                codes = load_file(self.paths[i])["codes"]
            except (SafetensorError, KeyError, OSError) as err:
                raise ValueError(
                    f"{self.paths[i]} is not a codes file (safetensors with a 'codes' tensor): {err}"
                ) from err
            return {"codes": codes.long(), "path": self.paths[i]}
        try:
            audio, _, _ = read_audio(self.paths[i], self.sample_rate)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot read predict file {self.paths[i]}: {err}") from err
        return {"audio": audio.unsqueeze(0), "path": self.paths[i]}


def _collate_one(items: list[dict[str, Any]]) -> dict[str, Any]:
    """batch_size 1 -> {"audio": [1, 1, T] or "codes": [1, G, frames, R], "path": str} (the default
    collate would make the path a list)."""
    return {k: v.unsqueeze(0) if torch.is_tensor(v) else v for k, v in items[0].items()}


class SpeechDataModule(BaseDataModule):
    """Speech for codec training: random fixed-length crops to train on, whole utterances to evaluate.

    With a ``root``, ``root/train_dir`` and ``root/test_dir`` are searched recursively for ``*.flac`` and
    ``*.wav`` (LibriSpeech's ``speaker/chapter/speaker-chapter-utt.flac`` or a flat folder); the speaker id is
    the first ``-`` field of the file stem. Files are read with soundfile, averaged to mono and resampled to
    ``sample_rate``; unreadable or empty files, and files with NaN/inf samples, are skipped and reported (with
    the reason) in one warning. ``root`` is only read.
    With ``root=None`` the data are :func:`synthetic_speech` (fixed seed 0, generated in about a second):
    24 train speakers x 4 utterances and 6 test speakers x 2, each 1.5-3 s of glottal-pulse vowels gliding
    between formant targets, noise fricatives and pauses, peak 0.5.

    Splits are speaker-disjoint: ``val_speakers`` whole speakers (drawn by ``seed``,
    :func:`~datamodules.splits.grouped_split`) are held out of the train folder for validation, and a speaker
    found in both folders raises ValueError. The train loader yields
    ``segments_per_epoch`` crops per epoch as float32 [B, 1, segment_samples]: utterances drawn proportional to
    length, random offsets, seeded by (``seed``, the run's torch seed, epoch) so runs repeat; shorter utterances
    are zero-padded. ``max_train_files`` keeps the first N train files in path order (a smaller training set).
    Val and test yield whole utterances [1, 1, T], cut to their first ``max_eval_seconds`` when set. Predict
    yields ``{"audio": [1, 1, T], "path": str}`` for ``predict_files`` (``{"codes": [1, G, frames, R]}`` for a
    ``.codes.safetensors`` file written by ``modules.codec.CodecWriter``), else for the test utterances.
    After ``setup()``, ``stats`` holds ``{train,val,test}_{files,seconds,speakers}`` (seconds as served) and
    the counts ``skipped``, ``downmixed``, ``resampled`` (files) and ``padded`` (train utterances shorter than
    a segment); ``skipped_paths`` lists the skipped files and ``skip_reasons`` says why each was skipped.
    """

    def __init__(
        self,
        root: str | None = None,
        train_dir: str = "train-clean",
        test_dir: str = "test-other",
        sample_rate: int = 16000,
        segment_samples: int = 16384,
        segments_per_epoch: int = 2000,
        batch_size: int = 16,
        val_speakers: int = 8,
        max_eval_seconds: float | None = None,
        max_train_files: int | None = None,
        predict_files: list[str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        sizes = dict(sample_rate=sample_rate, segment_samples=segment_samples, segments_per_epoch=segments_per_epoch)
        for name, value in dict(sizes, batch_size=batch_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if val_speakers < 0:
            raise ValueError(f"val_speakers must be >= 0, got {val_speakers}")
        if max_eval_seconds is not None and max_eval_seconds <= 0:
            raise ValueError(f"max_eval_seconds must be > 0 or None, got {max_eval_seconds}")
        # ``seed`` is the split seed (the validation speakers), and also seeds the training crops
        super().__init__(root=root, split_seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.train_dir, self.test_dir = train_dir, test_dir
        self.sample_rate, self.segment_samples = sample_rate, segment_samples
        self.segments_per_epoch, self.val_speakers = segments_per_epoch, val_speakers
        self.max_eval_seconds, self.predict_files = max_eval_seconds, predict_files
        self.seed, self.max_train_files = seed, max_train_files
        self.train_set: list[Utterance] | None = None
        self.val_set: list[Utterance] = []
        self.test_set: list[Utterance] = []
        self.skipped_paths: list[str] = []
        self.skip_reasons: dict[str, str] = {}  # skipped path -> why (undecodable, empty, NaN/inf samples)
        self.stats: dict[str, float | int] = {}

    # ------------------------------------------------------------------ reading

    def _read_folder(self, folder: Path, counts: dict[str, int], limit: int | None = None) -> list[Utterance]:
        if not folder.is_dir():
            state = "is a file, not a folder" if folder.exists() else "does not exist"
            raise FileNotFoundError(
                f"{folder} {state}; SpeechDataModule reads LibriSpeech-style folders of *.flac/*.wav under "
                f"root ({self.train_dir!r} and {self.test_dir!r}). Get LibriSpeech with torchaudio.datasets."
                "LIBRISPEECH(path, url='train-clean-100', download=True) (then root=path/LibriSpeech, "
                "train_dir='train-clean-100') or from https://openslr.org/12, or use root=None for the embedded "
                "synthetic default"
            )
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())[:limit]
        utterances = []
        for path in paths:
            try:
                audio, downmixed, resampled = read_audio(path, self.sample_rate)
            except (RuntimeError, ValueError) as err:
                self.skipped_paths.append(str(path))
                self.skip_reasons[str(path)] = str(err).replace(f"{path} ", "").replace(f"'{path}'", "it")
                continue
            counts["downmixed"] += downmixed
            counts["resampled"] += resampled
            utterances.append(Utterance(str(path), speaker_of(path), audio))
        if not utterances:
            if paths:
                reason = self.skip_reasons.get(str(paths[0]))
                what = f"none of its {len(paths)} audio files is usable (e.g. {paths[0].name}: {reason})"
            else:  # say what is there instead: another format, or nothing
                others = sorted({f.suffix or f.name for f in folder.rglob("*") if f.is_file()})[:5]
                what = "no *.flac or *.wav" + (f" (only {', '.join(others)} files)" if others else " (it is empty)")
            raise ValueError(f"no usable audio in {folder}: {what}")
        return utterances

    def setup(self, stage: str | None = None) -> None:
        """Read (or generate), check and split the utterances once; later calls return at once."""
        if self.train_set is not None:
            return
        counts = {"skipped": 0, "downmixed": 0, "resampled": 0, "padded": 0}
        self.skipped_paths, self.skip_reasons = [], {}
        if self.root is None:
            train_all = synthetic_speech(*SYNTHETIC_SIZES["train"], self.sample_rate)
            test = synthetic_speech(
                *SYNTHETIC_SIZES["test"], self.sample_rate, first_speaker=SYNTHETIC_SIZES["train"][0]
            )
        else:
            root = Path(self.root).expanduser()
            train_all = self._read_folder(root / self.train_dir, counts, self.max_train_files)
            test = self._read_folder(root / self.test_dir, counts)
            if self.skipped_paths:
                first = ", ".join(f"{p} ({self.skip_reasons[p]})" for p in self.skipped_paths[:3])
                rank_zero_warn(
                    f"SpeechDataModule skipped {len(self.skipped_paths)} unreadable or empty audio files: {first}"
                    + (" ..." if len(self.skipped_paths) > 3 else "")
                )
        speakers = sorted({u.speaker for u in train_all})
        shared = sorted(set(speakers) & {u.speaker for u in test})
        if shared:
            raise ValueError(
                f"speakers {shared[:5]}{' ...' if len(shared) > 5 else ''} ({len(shared)}) appear in both "
                f"{self.train_dir!r} and {self.test_dir!r}; train and test must be speaker-disjoint"
            )
        if self.val_speakers >= len(speakers):
            raise ValueError(f"val_speakers={self.val_speakers} leaves no training speaker of {len(speakers)}")
        # whole speakers, the first val_speakers of a seeded permutation of the sorted speaker ids
        split = grouped_split(
            torch.arange(len(speakers)), {"val": self.val_speakers}, self.seed, order=("val", "train", "test")
        )
        held_out = {speakers[i] for i in split["val"].tolist()}
        self.train_set = [u for u in train_all if u.speaker not in held_out]
        if self.max_eval_seconds is not None:
            keep = max(1, int(self.max_eval_seconds * self.sample_rate))
            test = [Utterance(u.path, u.speaker, u.audio[:keep]) for u in test]
            train_all = [Utterance(u.path, u.speaker, u.audio[:keep]) for u in train_all]
        self.val_set = [u for u in train_all if u.speaker in held_out]
        self.test_set = test
        counts["skipped"] = len(self.skipped_paths)
        counts["padded"] = sum(u.audio.numel() < self.segment_samples for u in self.train_set)
        self.stats = {}
        for split, utts in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            self.stats[f"{split}_files"] = len(utts)
            self.stats[f"{split}_seconds"] = sum(u.audio.numel() for u in utts) / self.sample_rate
            self.stats[f"{split}_speakers"] = len({u.speaker for u in utts})
        self.stats.update(counts)
        source = "synthetic speech" if self.root is None else str(self.root)
        rank_zero_info(
            f"SpeechDataModule ({source}, {self.sample_rate} Hz): "
            + "; ".join(
                f"{s} {self.stats[f'{s}_files']} files, {self.stats[f'{s}_seconds']:.0f} s, "
                f"{self.stats[f'{s}_speakers']} speakers"
                for s in ("train", "val", "test")
            )
            + f"; downmixed {counts['downmixed']}, resampled {counts['resampled']}, zero-padded {counts['padded']} "
            f"train utterances shorter than {self.segment_samples} samples"
        )

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        """``segments_per_epoch`` random crops per epoch, batches float32 [B, 1, segment_samples]."""
        self.setup()
        assert self.train_set is not None
        lengths = [u.audio.numel() for u in self.train_set]
        # crops follow the run's seed (seed_everything) as well as ``seed``, which also fixes the val speakers
        seed = self.seed + torch.initial_seed() % 2**31
        sampler = _CropSampler(lengths, self.segment_samples, self.segments_per_epoch, seed)
        return self.loader(_Crops(self.train_set, self.segment_samples), sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        """Whole validation utterances, float32 [1, 1, T] each."""
        self.setup()
        return self.loader(_Whole(self.val_set), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        """Whole test utterances, float32 [1, 1, T] each."""
        self.setup()
        return self.loader(_Whole(self.test_set), batch_size=1)

    def predict_dataloader(self) -> DataLoader:
        """``{"audio": [1, 1, T], "path": str}`` for each of ``predict_files``, else for each test utterance."""
        if self.predict_files is not None:
            dataset: Dataset = _PredictFiles(self.predict_files, self.sample_rate)
        else:
            self.setup()
            dataset = _Whole(self.test_set, with_path=True)
        return self.loader(dataset, batch_size=1, collate_fn=_collate_one)
