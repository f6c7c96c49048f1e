"""Where a job's files live: what workers can read as it is (shared), what is staged onto
storage first (stage_input, stage_data), and where the output is written (output_ref)."""
import os

from model import storage


def absolute(ref):
    """A local path made absolute; a URL as it is."""
    return ref if storage.is_url(ref) else os.path.abspath(ref)


def shared(s, ref):
    """True when workers read or write local path or URL `ref` as it is: any ref on the
    embedded stack (one host), a URL, or a path inside a shared-folder DIGITS_STORAGE.
    Any other local path is the client's own: it goes through storage (see docs/cluster.md,
    "Running on a cluster": local paths)."""
    if s.embedded or storage.is_url(ref):
        return True
    root = storage.local_path(s.storage)
    if root is None:  # storage is an object store: only its URLs are shared
        return False
    root, path = os.path.realpath(root), os.path.realpath(ref)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def stage_input(s, job_id, ref, name="input"):
    """Where workers read `ref`: as is when it is shared (see shared()); otherwise the
    client's local file is uploaded to storage `inputs/<job id>/` first, and a local image
    folder is packed there (model.data.imagepack: two objects instead of one per file)."""
    ref = absolute(str(ref))
    if shared(s, ref):
        return ref
    folder = os.path.isdir(ref)
    target = storage.join(s.storage, "inputs", job_id, name + ("" if folder else os.path.splitext(ref)[1]))
    if not folder and ref.lower().endswith(".zip"):  # its name kept: records are named `name.zip::member`
        target = storage.join(s.storage, "inputs", job_id, name, os.path.basename(ref))
    if folder:
        from model.data import imagefolder, imagepack
        imagepack.pack(ref, target, imagefolder.IMAGE_TYPES, imagefolder.MAX_IMAGE_BYTES)
    else:
        storage.upload(ref, target)
    return target


def stage_data(s, job_id, ref, name="input"):
    """stage_input of an input that may name a zip's member (`a.zip::test.csv`): the zip is
    staged, the member named after it."""
    from model.data import archive
    path, member = archive.split_member(absolute(str(ref)))
    return stage_input(s, job_id, path, name) + (archive.MEMBER_SEP + member if member else "")


def output_ref(s, job_id, out):
    """Where the workers write the output: --out itself when it is shared (see shared()),
    else jobs/<id>/ on storage, from where the waiting client downloads it to --out."""
    out = absolute(str(out))
    if shared(s, out):
        return out
    return storage.join(s.storage, "jobs", job_id, os.path.basename(out))
