"""The weights manifest: path safety and validation are pure functions, tested exhaustively here."""

from __future__ import annotations

import json

import pytest

from evals.errors import BadInput
from evals.weights.manifest import FORMAT, Manifest, ManifestEntry, build_manifest, check_relpath
from evals.weights.s3 import parse_model_url
from tests.fixtures.s3 import make_model

SHA = "a" * 64


def _doc(**over):
    doc = {"format": FORMAT, "format_version": 1, "name": "m", "version": "1",
           "files": [{"path": "config.json", "size": 3, "sha256": SHA}]}
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("path", ["/abs", "../up", "a/../../b", "a//b", "./a", "a/./b", "", "a\\b", "C:x",
                                  "MANIFEST.json", ".tollgate-staged.json", "a\x00b", 7])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(BadInput):
        check_relpath(path, "where")


@pytest.mark.parametrize("path", ["config.json", "sub/dir/model-00001-of-00004.safetensors", "a..b", ".hidden"])
def test_safe_paths_pass(path):
    assert check_relpath(path, "where") == path


@pytest.mark.parametrize("data, needle", [
    (b"{not json", "not valid JSON"),
    (json.dumps([1]).encode(), "not a Tollgate"),
    (_doc(format_version=2), "format_version"),
    (_doc(files=[]), "non-empty"),
    (_doc(files=[{"path": "a", "size": -1, "sha256": SHA}]), "size"),
    (_doc(files=[{"path": "a", "size": True, "sha256": SHA}]), "size"),
    (_doc(files=[{"path": "a", "size": 1, "sha256": "ABC"}]), "sha256"),
    (_doc(files=[{"path": "a", "size": 1, "sha256": SHA}, {"path": "A", "size": 1, "sha256": SHA}]), "collides"),
    (_doc(files=[{"path": "a", "size": 1, "sha256": SHA}, {"path": "a/b", "size": 1, "sha256": SHA}]), "collides"),
])
def test_malformed_manifests_are_bad_input_naming_the_source(data, needle):
    with pytest.raises(BadInput, match=needle) as err:
        Manifest.from_bytes(data, "s3://b/models/m/1/MANIFEST.json")
    assert "s3://b/models/m/1/MANIFEST.json" in str(err.value)


def test_round_trip_and_content_identity(tmp_path):
    files = make_model(tmp_path, big_bytes=1000)
    m = build_manifest(tmp_path, "m", "1")
    assert {f.path for f in m.files} == set(files)  # .cache is tool state, not a model file
    back = Manifest.from_bytes(m.to_bytes(), "x")
    assert back.same_content(m) and back.total_size == sum(len(b) for b in files.values())
    other = Manifest("m", "1", m.files[:-1] + (ManifestEntry(m.files[-1].path, 1, SHA),))
    assert not other.same_content(m)


@pytest.mark.parametrize("url, ok", [
    ("s3://bucket/models/name/1", ("bucket", "models/name/1", "name", "1")),
    ("s3://bucket/models/name/1/", ("bucket", "models/name/1", "name", "1")),
    ("s3://bucket/a/b/c/name/v2.1", ("bucket", "a/b/c/name/v2.1", "name", "v2.1")),
    ("s3://bucket/name", None), ("s3:///models/n/1", None), ("gs://b/models/n/1", None),
    ("s3://bucket/models/../1", None), ("s3://bucket/models/n/-x", None),
])
def test_model_urls(url, ok):
    if ok is None:
        with pytest.raises(BadInput, match="--source"):
            parse_model_url(url, "--source")
    else:
        loc = parse_model_url(url, "--source")
        assert (loc.bucket, loc.prefix, loc.name, loc.version) == ok
