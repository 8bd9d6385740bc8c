"""Generated embedded keys kept beside the SQLite store (``playtotv.keyfile``)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from playtotv.keyfile import keys_path, load_or_generate
from playtotv.settings import ConfigError


def test_keys_live_beside_a_sqlite_file_only():
    assert keys_path("sqlite:///playtotv.db") == "playtotv.db.keys"
    assert keys_path("sqlite:////var/lib/ptv/x.db") == "/var/lib/ptv/x.db.keys"
    assert keys_path("sqlite:///:memory:") is None
    assert keys_path("mongodb://db/playtotv") is None


def test_generated_once_then_reused_and_private_whatever_the_umask(tmp_path):
    path = str(tmp_path / "play.db.keys")
    old = os.umask(0)
    try:
        first = load_or_generate(path, secret=True, director_key=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.secret and first.director_key
    assert load_or_generate(path, secret=True, director_key=True) == first
    assert os.listdir(tmp_path) == ["play.db.keys"]  # no temporary file left behind


def test_a_key_configured_later_keeps_the_other_and_one_needed_later_is_added(tmp_path):
    path = str(tmp_path / "play.db.keys")
    only_key = load_or_generate(path, secret=False, director_key=True)
    assert only_key.secret is None
    both = load_or_generate(path, secret=True, director_key=True)
    assert both.director_key == only_key.director_key and both.secret
    assert json.loads(open(path).read()) == {"secret": both.secret, "director_key": both.director_key}


def test_without_a_file_they_are_generated_per_call():
    assert load_or_generate(None, secret=True, director_key=True) != load_or_generate(None, secret=True,
                                                                                      director_key=True)


@pytest.mark.parametrize("content", ["not json", '{"secret": 5}', '{"secret": "short"}',
                                     '{"director_key": "abc"}'])
def test_a_damaged_file_is_a_configuration_error_that_shows_no_value(tmp_path, content):
    path = tmp_path / "play.db.keys"
    path.write_text(content)
    with pytest.raises(ConfigError, match="not a valid keys file") as e:
        load_or_generate(str(path), secret=True, director_key=True)
    assert "short" not in str(e.value) and "abc" not in str(e.value)
