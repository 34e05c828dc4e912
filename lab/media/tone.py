"""Tones the peer plays and the frequency analysis of what it hears.

Each side of a lab call plays its own sine tone; each side then names the frequency that
dominates what it received. A Hann-windowed FFT with parabolic interpolation between bins
resolves a pure tone to well under 1 Hz from a second of audio, far finer than the few hundred
hertz between the tones the lab uses.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

AMPLITUDE = 0.3  # of full scale: loud enough to dominate, far from clipping after a codec


class ToneGenerator:
    """A continuous sine wave cut into frames of 16-bit mono samples (no click between frames)."""

    def __init__(self, frequency: float, sample_rate: int, amplitude: float = AMPLITUDE) -> None:
        self.frequency = frequency
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self.position = 0  # samples generated so far

    def frame(self, samples: int) -> bytes:
        """The next `samples` samples, little-endian int16."""
        n = np.arange(self.position, self.position + samples, dtype=np.float64)
        self.position += samples
        wave = self.amplitude * np.sin(2 * math.pi * self.frequency * n / self.sample_rate)
        return (wave * 32767).astype("<i2").tobytes()


def pcm_samples(pcm: bytes) -> NDArray[np.float64]:
    """Little-endian int16 PCM as floats in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def rms(pcm: bytes) -> float:
    """Root mean square level of int16 PCM, 0..1 (0 for silence or nothing)."""
    samples = pcm_samples(pcm)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def dominant_frequency(pcm: bytes, sample_rate: int, min_rms: float = 0.01) -> float | None:
    """The frequency (Hz) with the most energy in int16 mono `pcm`, or None when the audio is
    (near) silence or too short to tell; DC and below 50 Hz are ignored."""
    samples = pcm_samples(pcm)
    if samples.size < sample_rate // 20 or rms(pcm) < min_rms:
        return None
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * window))
    bin_hz = sample_rate / samples.size
    low = max(1, int(50 / bin_hz))
    peak = low + int(np.argmax(spectrum[low:-1]))
    # parabolic interpolation on log magnitudes around the peak bin
    a, b, c = (math.log(max(float(spectrum[i]), 1e-12)) for i in (peak - 1, peak, peak + 1))
    denominator = a - 2 * b + c
    offset = 0.5 * (a - c) / denominator if denominator else 0.0
    return (peak + offset) * bin_hz
