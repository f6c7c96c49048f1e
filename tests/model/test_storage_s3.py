"""The storage layer, checkpoints and the registry against S3: an in-process S3 stand-in
(moto's server mode) reached through fsspec/s3fs, exactly as `DIGITS_STORAGE=s3://...`."""
import numpy as np
import pytest

pytest.importorskip("s3fs", reason="S3 support is the optional extra: pip install -e '.[s3]'")
moto_server = pytest.importorskip("moto.server", reason="moto[server] provides the S3 stand-in")

from model import checkpoint, network, storage  # noqa: E402
from model.registry.versions import Registry  # noqa: E402

BUCKET = "digits-test"


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    """An S3 endpoint on 127.0.0.1 with one bucket; fsspec finds it through FSSPEC_S3_* settings."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch_module.setenv(k, v)
    import fsspec.config
    fsspec.config.set_conf_env(fsspec.config.conf)  # pick up FSSPEC_S3_ENDPOINT_URL
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    fs.mkdir(BUCKET)
    yield f"s3://{BUCKET}/prefix"
    fsspec.config.conf.pop("s3", None)
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_write_read_list_remove(s3):
    target = storage.join(s3, "jobs", "j1", "job.json")
    storage.write_text(target, '{"a": 1}')
    assert storage.read_text(target) == '{"a": 1}'
    assert storage.exists(target)
    assert storage.listdir(storage.join(s3, "jobs", "j1")) == ["job.json"]
    storage.write_bytes(storage.join(s3, "blob"), b"0123456789")
    assert storage.read_bytes(storage.join(s3, "blob"), 2, 5) == b"234"
    storage.remove(target)
    assert not storage.exists(target)


def test_model_round_trip_and_registry(s3):
    params = network.init_params(np.random.default_rng(0))
    model = checkpoint.make_model(params, np.zeros(784, np.float32), np.ones(784, np.float32), recipe="faithful")
    ref = storage.join(s3, "m.npz")
    checkpoint.save_model(model, ref)
    back = checkpoint.load_model(ref)
    assert back.version == model.version
    assert all(np.array_equal(back.params[k], params[k]) for k in params)

    reg = Registry(s3)
    meta = reg.register("digits", model, metrics={"val_accuracy": 0.9}, history=[], config={},
                        recipe="faithful", data_fingerprint="f", data_source="d", job_id="j")
    assert meta["version"] == "1"
    path, info = reg.resolve("digits")
    assert info["version"] == "1" and path.startswith("s3://")
    assert checkpoint.load_model(path).version == model.version
    assert reg.aliases("digits") == {"latest": "1", "production": "1"}


def test_listings_see_what_another_host_wrote_since(s3):
    """A folder listed once, then written by another process (another s3fs instance, as on
    another host): listdir, walk_files and exists see the new file at once."""
    import s3fs
    folder = storage.join(s3, "jobs", "j2", "chunks")
    storage.write_bytes(storage.join(folder, "000000.npz"), b"a")
    assert storage.listdir(folder) == ["000000.npz"]
    assert not storage.exists(storage.join(folder, "000001.npz"))
    other = s3fs.S3FileSystem(skip_instance_cache=True)  # its own cache, like another host's
    other.pipe_file(storage.join(folder, "000001.npz")[len("s3://"):], b"b")
    assert storage.listdir(folder) == ["000000.npz", "000001.npz"]
    assert storage.walk_files(storage.join(s3, "jobs", "j2")) == ["chunks/000000.npz", "chunks/000001.npz"]
    assert storage.exists(storage.join(folder, "000001.npz"))


def test_storage_errors_name_their_path(s3):
    missing = storage.join(s3, "no", "such.csv")
    with pytest.raises(FileNotFoundError) as e:
        storage.read_bytes(missing)
    assert missing.split("://", 1)[1] in str(e.value) or missing in str(e.value)
    with pytest.raises(FileNotFoundError, match="such.csv"):
        storage.size(missing)


def test_an_image_folder_packed_on_s3_reads_as_the_folder(s3, sample, tmp_path):
    """What a client uploads for a local image folder (model.data.imagepack), read back from S3."""
    from model.data import imagefolder, imagepack, sources
    from model.data.samples import write_sample
    write_sample(str(tmp_path), images=True)
    folder = str(tmp_path / "images" / "test")
    target = storage.join(s3, "inputs", "job-1", "input")
    imagepack.pack(folder, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    assert sorted(storage.listdir(target)) == sorted([imagepack.INDEX, imagepack.PACK])
    plain, packed = sources.open_source(folder, 200, 200), sources.open_source(target, 200, 200)
    assert packed.paths == plain.paths and packed.pack is not None
    for i in range(len(plain.chunks)):
        assert np.array_equal(plain.read(i).pixels, packed.read(i).pixels)


def test_compressed_and_zipped_csvs_on_s3_are_read_by_ranges(s3, tmp_path):
    """A gzip file and a Kaggle-like zip on the object store: the zip's directory and member
    are read through ranges (never the whole object), unpacked beside on the store."""
    import gzip

    from model.data import sources
    from model.data.samples import load_sample
    from tests.model.data import tool_files
    sample = load_sample()
    x = sample["test_x"][:40]
    gz = storage.join(s3, "in", "test.csv.gz")
    storage.write_bytes(gz, gzip.compress(tool_files.plain(x)))
    kz = storage.join(s3, "in", "digit-recognizer.zip")
    storage.write_bytes(kz, tool_files.kaggle_zip(sample["train_x"][:30], sample["train_y"][:30], x))
    for ref in (gz, kz):
        sources.check_input(ref)
        source = sources.open_source(ref, 15, unpack_to=storage.join(s3, "unpacked", ref.rsplit("/", 1)[1]))
        assert source.input.startswith(s3)
        pixels = np.concatenate([source.read(i).pixels for i in range(len(source.chunks))])
        np.testing.assert_array_equal(pixels, x)
    ds = sources.load_training(kz)
    np.testing.assert_array_equal(ds.pixels, sample["train_x"][:30])
