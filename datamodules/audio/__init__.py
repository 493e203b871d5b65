"""Audio datamodules: speech for neural audio codecs (:mod:`.speech`, LibriSpeech-style folders or an embedded
synthetic speech-like default)."""

from datamodules.audio.speech import SpeechDataModule, Utterance, read_audio, speaker_of, synthetic_speech

__all__ = ["SpeechDataModule", "Utterance", "read_audio", "speaker_of", "synthetic_speech"]
