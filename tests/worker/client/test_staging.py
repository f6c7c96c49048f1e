"""The rule for local paths on a cluster (docs/cluster.md, "Hosts, paths and transport"): workers use a path
as it is on the embedded stack, for URLs, and inside a shared-folder DIGITS_STORAGE; any other
local path is the client's own and goes through storage."""
import dataclasses

from worker import settings
from worker.client.staging import output_ref, shared, stage_input


def _settings(tmp_path, storage, broker="redis://h:6379/0"):
    s = settings.load()
    return dataclasses.replace(s, storage=str(storage), broker_url=broker)


def test_shared_paths(tmp_path):
    store = tmp_path / "shared"
    store.mkdir()
    s = _settings(tmp_path, store)
    assert shared(s, str(store / "in" / "a.csv"))
    assert shared(s, "s3://bucket/a.csv")
    assert not shared(s, str(tmp_path / "home" / "a.csv"))
    assert not shared(s, str(tmp_path / "shared-not" / "a.csv"))  # a sibling with the same prefix
    assert shared(dataclasses.replace(s, broker_url=None), str(tmp_path / "home" / "a.csv"))  # one host
    assert not shared(dataclasses.replace(s, storage="s3://bucket/p"), str(store / "a.csv"))


def test_client_local_input_is_copied_and_output_redirected(tmp_path):
    store = tmp_path / "shared"
    store.mkdir()
    s = _settings(tmp_path, store)
    src = tmp_path / "home" / "test.csv"
    src.parent.mkdir()
    src.write_text("pixel0\n1\n")
    staged = stage_input(s, "job-1", str(src))
    assert staged == str(store / "inputs" / "job-1" / "input.csv")
    assert open(staged).read() == "pixel0\n1\n"
    assert output_ref(s, "job-1", str(tmp_path / "home" / "sub.csv")) == str(store / "jobs" / "job-1" / "sub.csv")
    inside = str(store / "out" / "sub.csv")
    assert output_ref(s, "job-1", inside) == inside
    assert stage_input(s, "job-2", str(store / "x.csv")) == str(store / "x.csv")


def test_a_staged_zip_keeps_its_name_for_its_records(tmp_path, sample):
    """Records of a zip of images are named `archive.zip::member`: the copy workers read is
    still called archive.zip."""
    import io
    import zipfile

    from PIL import Image

    from model.data import sources
    store = tmp_path / "shared"
    store.mkdir()
    src = tmp_path / "home" / "archive.zip"
    src.parent.mkdir()
    buf = io.BytesIO()
    Image.fromarray(sample["test_x"][0].reshape(28, 28), "L").save(buf, "PNG")
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("d/x.png", buf.getvalue())
    staged = stage_input(_settings(tmp_path, store), "job-3", str(src))
    assert staged == str(store / "inputs" / "job-3" / "input" / "archive.zip")
    source = sources.open_source(staged, 10)
    assert source.names(0, 0, 1) == ["archive.zip::d/x.png"] and not source.read(0).errors
