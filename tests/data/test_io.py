import numpy as np
import pytest
import tifffile
from PIL import Image

from densevision.data.checks import DatasetError
from densevision.data.io import (
    colourise_mask,
    list_files,
    read_image,
    read_mask,
    write_colour_mask,
    write_mask_png,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (6, 7), dtype=np.uint16)
BANDS4 = RNG.integers(0, 65536, (6, 7, 4), dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_image_rgb_lossless_formats(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(RGB).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
    np.testing.assert_array_equal(image, RGB)


def test_read_image_jpeg_shape(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (6, 7, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_image_grayscale_gets_channel_axis(tmp_path, suffix):
    Image.fromarray(RGB[..., 0]).save(tmp_path / f"g{suffix}")
    image = read_image(tmp_path / f"g{suffix}")
    assert image.shape == (6, 7, 1)
    np.testing.assert_array_equal(image[..., 0], RGB[..., 0])


def test_read_image_16bit_png(tmp_path):
    Image.fromarray(GRAY16).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.dtype == np.uint16 and image.shape == (6, 7, 1)
    np.testing.assert_array_equal(image[..., 0], GRAY16)


@pytest.mark.parametrize("planar", [False, True])
def test_read_image_multiband_16bit_tiff(tmp_path, planar):
    data = BANDS4.transpose(2, 0, 1) if planar else BANDS4
    kwargs = {"photometric": "minisblack", "planarconfig": "separate" if planar else "contig"}
    tifffile.imwrite(tmp_path / "b.tif", data, **kwargs)
    image = read_image(tmp_path / "b.tif")
    assert image.dtype == np.uint16 and image.shape == (6, 7, 4)
    np.testing.assert_array_equal(image, BANDS4)


def test_read_image_bands_stored_as_pages(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for band in range(4):
            tif.write(BANDS4[..., band], photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "pages.tif"), BANDS4)


@pytest.mark.parametrize("name", ["broken.png", "broken.tif", "broken.jpg"])
def test_unreadable_image_names_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=name):
        read_image(tmp_path / name)


def test_missing_image_names_file(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*nothere\.png"):
        read_image(tmp_path / "nothere.png")


def test_mask_png_roundtrip_8bit_and_palette(tmp_path):
    mask = RNG.integers(0, 12, (6, 7)).astype(np.int64)
    write_mask_png(tmp_path / "plain.png", mask)
    write_mask_png(tmp_path / "palette.png", mask, palette=[(i * 20, 0, 0) for i in range(12)])
    with Image.open(tmp_path / "palette.png") as img:
        assert img.mode == "P"
    for name in ("plain.png", "palette.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), mask)


def test_mask_png_16bit_when_index_exceeds_255(tmp_path):
    mask = np.array([[0, 300], [65535, 7]])
    write_mask_png(tmp_path / "m16.png", mask)
    read = read_mask(tmp_path / "m16.png")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, mask)


@pytest.mark.parametrize("bad", [np.array([[-1, 0]]), np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2, 3), int)])
def test_write_mask_png_rejects_bad_arrays(tmp_path, bad):
    with pytest.raises(ValueError):
        write_mask_png(tmp_path / "bad.png", bad)


def test_rgb_mask_mapped_with_palette_or_mapping(tmp_path):
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    indices = RNG.integers(0, 3, (6, 7))
    write_colour_mask(tmp_path / "rgb.png", indices, palette)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", palette), indices)
    mapping = {(0, 0, 0): 9, (255, 0, 0): 4, (0, 255, 0): 4}
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", mapping), np.array([9, 4, 4])[indices])


def test_rgb_mask_unknown_colour_names_colour_and_file(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[1, 2] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(DatasetError, match=r"\(10, 20, 30\).*odd\.png"):
        read_mask(tmp_path / "odd.png", [(0, 0, 0)])


def test_rgb_mask_without_palette_is_an_error(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="colour-coded.*palette"):
        read_mask(tmp_path / "rgb.png")


def test_colourise_mask_uses_ignore_colour_for_void():
    palette = [(1, 2, 3), (4, 5, 6)]
    picture = colourise_mask(np.array([[0, 1, 11]]), palette, ignore_colour=(9, 9, 9))
    np.testing.assert_array_equal(picture[0], [[1, 2, 3], [4, 5, 6], [9, 9, 9]])


def test_list_files_leaves_out_hidden_files_and_folders(tmp_path):
    for name in ("b.PNG", "a.jpg", "._a.jpg", ".DS_Store", "notes.txt", "sub/c.tif", "sub/._c.tif", ".git/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    files, hidden = list_files(tmp_path)
    assert [p.name for p in files] == ["a.jpg", "b.PNG"] and [p.name for p in hidden] == ["._a.jpg"]
    files, hidden = list_files(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.jpg", "b.PNG", "sub/c.tif"]
    assert [p.relative_to(tmp_path).as_posix() for p in hidden] == ["._a.jpg", ".git/d.png", "sub/._c.tif"]
    assert list_files(tmp_path, [".txt"])[0] == [tmp_path / "notes.txt"]
