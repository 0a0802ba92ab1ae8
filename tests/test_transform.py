import numpy as np
import pytest

from coverid.features.transform import (
    crop_or_wrap,
    resize_time,
    tile_pitch,
    to_model_input,
)


def test_resize_area_preserves_mean_and_averages_blocks():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = resize_time(x, 3)
    np.testing.assert_allclose(y, [[1, 2], [5, 6], [9, 10]])
    rng = np.random.default_rng(0)
    z = rng.random((1001, 12))
    np.testing.assert_allclose(resize_time(z, 500).mean(0), z.mean(0), rtol=1e-5)


def test_resize_fractional_spans():
    x = np.array([[0.0], [3.0], [6.0]])
    y = resize_time(x, 2)  # spans [0, 1.5) and [1.5, 3)
    np.testing.assert_allclose(y[:, 0], [(0 + 0.5 * 3) / 1.5, (0.5 * 3 + 6) / 1.5])


def test_resize_upsamples_by_repetition():
    x = np.array([[1.0], [2.0]])
    np.testing.assert_array_equal(resize_time(x, 4)[:, 0], [1, 1, 2, 2])


def test_crop_or_wrap():
    x = np.arange(5)[:, None]
    np.testing.assert_array_equal(crop_or_wrap(x, 3)[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(crop_or_wrap(x, 12)[:, 0], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    assert crop_or_wrap(x, None) is x


def test_tiling_and_model_input_shape():
    x = np.arange(24).reshape(12, 2)
    t = tile_pitch(x)
    assert t.shape == (23, 2)
    np.testing.assert_array_equal(t[12:], x[:11])
    y = to_model_input(np.random.default_rng(0).random((900, 12)), 50, 800, tile=True)
    assert y.shape == (23, 50) and y.dtype == np.float32
    assert to_model_input(np.ones((10, 12)), 50, None, tile=False).shape == (12, 50)


def test_is_tiled_names_the_row_counts():
    from coverid.core.errors import CoveridError
    from coverid.features.transform import TILED_ROWS, is_tiled, tile_pitch

    assert is_tiled(tile_pitch(np.zeros((12, 5))).shape[0]) and TILED_ROWS == 23
    assert not is_tiled(12)
    with pytest.raises(CoveridError, match="12 or 23 pitch rows, got 7"):
        is_tiled(7)


def test_pitch_names_follow_each_features_first_bin():
    from coverid.features.transform import pitch_names

    # essentia's HPCP: bin 0 is the reference frequency, A = 440 Hz (so C is bin 3)
    assert pitch_names("synth", "hpcp")[:4] == ["A", "A#", "B", "C"]
    assert pitch_names("audio", "chroma_cens")[0] == "A"  # derived from our HPCP
    assert pitch_names("datacos", "hpcp")[0] == "A"
    assert pitch_names("datacos", "crema") == pitch_names("datacos", "chroma_cens")
    assert pitch_names("datacos", "crema")[::3] == ["C", "D#", "F#", "A"]


def test_stacked_inputs_of_fused_features():
    """preprocess.fusion: the input stacks each feature's to_model_input, in the name's order."""
    from coverid.core.errors import CoveridError
    from coverid.features.transform import (
        feature_parts,
        input_feature,
        part_rows,
        stacked_input,
        to_model_input,
    )

    assert input_feature({"feature": "hpcp", "fusion": []}) == "hpcp"
    assert input_feature({"feature": "hpcp", "fusion": ["melody"]}) == "hpcp+melody"
    assert feature_parts("hpcp+melody") == ["hpcp", "melody"]
    with pytest.raises(CoveridError, match="repeats a feature"):
        input_feature({"feature": "melody", "fusion": ["melody"]})
    assert part_rows(46, 2) == 23 and part_rows(24, 2) == 12 and part_rows(23, 1) == 23
    for rows, parts in ((46, 1), (45, 2), (23, 2)):
        with pytest.raises(CoveridError, match="pitch rows each"):
            part_rows(rows, parts)
    rng = np.random.default_rng(0)
    xs = {"melody": rng.random((90, 12)), "hpcp": rng.random((100, 12))}  # lengths may differ
    x = stacked_input(xs, "hpcp+melody", 30, None, True)
    assert x.shape == (46, 30)
    np.testing.assert_array_equal(x[:23], to_model_input(xs["hpcp"], 30, None, True))
    np.testing.assert_array_equal(x[23:], to_model_input(xs["melody"], 30, None, True))
