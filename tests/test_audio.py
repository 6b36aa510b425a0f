"""affectlab.data.audio: WAV decoding edge cases on real files, resampling, envelope, log-mel, HuBERT's processor."""

import io

import numpy as np
import pytest
import soundfile as sf

from affectlab.data.audio import AudioError, audio_envelope, hubert_processor, log_mel, read_wav


def sine(freq, seconds, sr, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def wav_bytes(data, sr, subtype="PCM_16", fmt="WAV"):
    buffer = io.BytesIO()
    sf.write(buffer, data, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path):
    left, right = sine(300, 0.5, 16000, 0.6), sine(700, 0.5, 16000, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    out = read_wav(path)
    assert out.dtype == np.float32 and out.shape == (8000,)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


def test_44k1_is_resampled_to_16k_with_the_right_length_and_frequency(tmp_path):
    path = tmp_path / "cd.wav"
    sf.write(path, sine(440, 1.0, 44100), 44100, subtype="PCM_16")
    out = read_wav(path)
    assert out.shape == (16000,)  # 44100 * 160 / 441
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over one second
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.01)
    # an odd length: ceil(n * up / down) samples, as resample_poly gives
    sf.write(path, sine(440, 0.5, 22050)[:11007], 22050)
    assert read_wav(path).shape == (int(np.ceil(11007 * 320 / 441)),)


def test_float_wav_above_full_scale_is_scaled_not_clipped():
    out = read_wav(wav_bytes(np.array([0.5, -2.0, 1.0, 0.0], np.float32), 16000, subtype="FLOAT"))
    np.testing.assert_allclose(out, [0.25, -1.0, 0.5, 0.0], atol=1e-7)


def test_truncated_wav_is_refused_naming_the_source(tmp_path):
    data = wav_bytes(sine(440, 1.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"<WAV bytes>: truncated WAV: the header declares 32000 bytes"):
        read_wav(data[: len(data) // 2])
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:30])  # cut inside the header
    with pytest.raises(AudioError, match=rf"{path}: truncated WAV"):
        read_wav(path)


def test_not_a_wav_is_refused(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio " * 20)
    with pytest.raises(AudioError, match=rf"{text}: not a WAV file or undecodable"):
        read_wav(text)
    flac = wav_bytes(sine(440, 0.2, 16000), 16000, fmt="FLAC")
    with pytest.raises(AudioError, match="upload.flac: is FLAC audio; expected a WAV file"):
        read_wav(flac, name="upload.flac")
    with pytest.raises(AudioError, match="no such audio file"):
        read_wav(tmp_path / "missing.wav")


def test_empty_inputs_are_refused(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        read_wav(empty)
    with pytest.raises(AudioError, match="holds no audio samples"):
        read_wav(wav_bytes(np.zeros(0, np.float32), 16000))


def test_too_long_is_refused_before_decoding():
    data = wav_bytes(sine(440, 2.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"2\.0 s of audio is longer than the limit of 1\.5 s"):
        read_wav(data, max_seconds=1.5)
    assert read_wav(data, max_seconds=2.0).shape == (32000,)


def test_nan_samples_are_refused():
    with pytest.raises(AudioError, match="NaN or infinite"):
        read_wav(wav_bytes(np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT"))


def test_envelope_is_the_per_frame_rms():
    audio = np.concatenate([np.full(640, 0.5), np.zeros(640), np.tile([0.3, -0.3], 320)]).astype(np.float32)
    np.testing.assert_allclose(audio_envelope(audio, 16000, 25), [0.5, 0.0, 0.3], atol=1e-7)
    # asked for more frames than the audio covers: silence; 30 fps uses 533.3-sample frames
    np.testing.assert_allclose(audio_envelope(audio, 16000, 25, n_frames=5), [0.5, 0.0, 0.3, 0.0, 0.0], atol=1e-7)
    assert audio_envelope(audio, 16000, 30).shape == (3,)


def voiced_then_silent(sr=16000):
    rng = np.random.default_rng(0)
    voiced = sum(sine(150 * k, 1.0, sr, 0.3 / k) for k in range(1, 8))
    silent = rng.normal(0, 1e-4, sr).astype(np.float32)
    return np.concatenate([silent, voiced, silent]).astype(np.float32)


def test_log_mel_is_aligned_to_25_fps_and_sees_speech():
    audio = voiced_then_silent()  # 3 s: silent, voiced, silent
    mel = log_mel(audio, 16000)
    assert mel.shape == (75, 80) and mel.dtype == np.float32
    assert np.abs(mel.mean(axis=0)).max() < 0.2  # normalised per band over the utterance (before interpolation)
    voiced, silent = mel[30:45].mean(), np.concatenate([mel[5:20], mel[55:70]]).mean()
    assert voiced > silent + 0.5
    # k sub-frames per motion frame (k = 4 mirrors HuBERT's pair concatenation), any input rate
    stacked = log_mel(audio, 16000, per_frame=4)
    assert stacked.shape == (75, 320)
    assert log_mel(audio[:32000], 16000, n_frames=60).shape == (60, 80)
    from affectlab.data.audio import resample

    assert log_mel(resample(audio, 16000, 48000), 48000).shape == (75, 80)


def test_hubert_processor_offline_fallback_and_local_path(tmp_path):
    extractor, source = hubert_processor("facebook/hubert-base-ls960", allow_download=False)
    assert source.startswith("fallback:hubert-base-ls960 settings")
    assert (extractor.sampling_rate, extractor.feature_size, extractor.do_normalize, extractor.return_attention_mask) == (
        16000, 1, True, False,
    )  # fmt: skip
    values = extractor(np.linspace(-1, 1, 1600, dtype=np.float32), sampling_rate=16000, return_tensors="np").input_values
    assert abs(values.mean()) < 1e-5 and values.std() == pytest.approx(1.0, abs=1e-3)

    from transformers import Wav2Vec2FeatureExtractor

    model_dir = tmp_path / "my_hubert"
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(model_dir)
    extractor, source = hubert_processor(model_dir)
    assert source == f"path:{model_dir}" and not extractor.do_normalize and extractor.return_attention_mask
    with pytest.raises(FileNotFoundError, match="not a directory"):
        hubert_processor(tmp_path / "nowhere")
