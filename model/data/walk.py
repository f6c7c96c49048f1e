"""Every file under a local folder, at any depth, without recursion.

    rels = walk_local(root)   # sorted "/"-separated paths relative to root
"""
import os


def walk_local(root):
    """Every file under a local folder -> sorted relative "/"-paths: a loop, not a recursion,
    so a folder of any depth is walked (Python 3.11's os.walk recurses once per level);
    symlinked folders are followed, each real folder once (a symlink loop ends there), the
    first name in sorted depth-first order kept for a folder reached twice."""
    out, seen, stack = [], set(), [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop, or a folder reached twice
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:  # as os.walk: a folder that cannot be listed lists nothing
            continue
        folders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # a symlink to a folder counts as one
            except OSError:
                is_dir = False
            if is_dir:
                folders.append((prefix + entry.name + "/", entry.path))
            else:
                out.append(prefix + entry.name)
        stack.extend(reversed(folders))  # the first name is walked first
    return sorted(out)
