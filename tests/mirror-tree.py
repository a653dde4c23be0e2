#!/usr/bin/env python3
"""mirror-tree.py SRC DST: makes DST's files those of SRC (without SRC's .git and build*
directories; DST's build* directories are left alone). A file whose content or mode differs
is written anew, so that its modification time is now: the build directories kept in DST
then rebuild it even when SRC's copy is older than their last build (another checkout, a
branch switched back). Files that are the same are not touched, so nothing else rebuilds."""
import os
import shutil
import stat
import sys

src, dst = sys.argv[1], sys.argv[2]


def skipped(rel):
    top = rel.split(os.sep, 1)[0]
    return top == ".git" or top.startswith("build")


seen = set()
for root, dirs, files in os.walk(src):
    rel_root = os.path.relpath(root, src)
    dirs[:] = [d for d in dirs if not skipped(os.path.normpath(os.path.join(rel_root, d)))]
    for d in dirs:
        rel = os.path.normpath(os.path.join(rel_root, d))
        seen.add(rel)
        target = os.path.join(dst, rel)
        if os.path.islink(target) or (os.path.exists(target) and not os.path.isdir(target)):
            os.remove(target)
        os.makedirs(target, exist_ok=True)
    for f in files:
        rel = os.path.normpath(os.path.join(rel_root, f))
        seen.add(rel)
        a, b = os.path.join(src, rel), os.path.join(dst, rel)
        if os.path.islink(a):
            if os.path.islink(b) and os.readlink(a) == os.readlink(b):
                continue
            if os.path.lexists(b):
                os.remove(b)
            os.symlink(os.readlink(a), b)
            continue
        mode = stat.S_IMODE(os.stat(a).st_mode)
        same = (os.path.isfile(b) and not os.path.islink(b)
                and stat.S_IMODE(os.stat(b).st_mode) == mode
                and os.path.getsize(a) == os.path.getsize(b))
        if same:
            with open(a, "rb") as fa, open(b, "rb") as fb:
                same = fa.read() == fb.read()
        if not same:
            if os.path.lexists(b) and (os.path.islink(b) or not os.path.isfile(b)):
                shutil.rmtree(b) if os.path.isdir(b) and not os.path.islink(b) else os.remove(b)
            shutil.copyfile(a, b)
            os.chmod(b, mode)

# what SRC no longer has goes, deepest first
for root, dirs, files in os.walk(dst, topdown=False):
    rel_root = os.path.relpath(root, dst)
    if rel_root != "." and skipped(os.path.normpath(rel_root)):
        continue
    for name in files + dirs:
        rel = os.path.normpath(os.path.join(rel_root, name))
        if skipped(rel) or rel in seen:
            continue
        path = os.path.join(dst, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
