"""Change-path validation (SPEC §2 "Every path is relative to the repo root").

Pure tests of :mod:`orchestrator.domain.paths`: the first gate that keeps a
request's paths, and the paths and symlinks a patch names, inside the tree.
"""

from __future__ import annotations

import pytest

from orchestrator.domain.paths import check_link_target, check_path, patch_paths
from orchestrator.errors import RequestRejected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("lib/x.py", "lib/x.py"),
        ("a/./b", "a/b"),
        ("a//b", "a/b"),
        ("./a", "a"),
        ("a/", "a"),
        (".gitignore", ".gitignore"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        ("...", "..."),  # three dots is an ordinary name, not a parent reference
    ],
)
def test_check_path_accepts_and_normalises(path: str, expected: str) -> None:
    assert check_path(path) == expected


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("C:/Windows/system32", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/b/..", "'..'"),
        ("..", "'..'"),
        (".git", ".git"),
        (".git/config", ".git"),
        ("./.git/hooks/pre-commit", ".git"),
        ("a/./../.git", "'..'"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\tb", "control"),
        ("a\x7fb", "control"),
        ("", "empty"),
        (".", "repository root"),
        ("./", "repository root"),
    ],
)
def test_check_path_rejects(path: str, why: str) -> None:
    with pytest.raises(RequestRejected) as info:
        check_path(path)
    assert info.value.code == "invalid_path"
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("link", "target"),
    [("lib/link", "../README.md"), ("a/b/link", "../../c"), ("link", "lib/x.py"), ("link", ".")],
)
def test_link_target_inside_tree_is_fine(link: str, target: str) -> None:
    assert check_link_target(link, target) is None


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("link", "/etc/passwd"),
        ("link", "../x"),
        ("a/b/link", "../../../c"),
        ("lib/link", "../.git/config"),
        ("link", "ok\x00"),
    ],
)
def test_link_target_escaping_tree_is_rejected(link: str, target: str) -> None:
    with pytest.raises(RequestRejected) as info:
        check_link_target(link, target)
    assert info.value.code == "invalid_path"
    assert "escapes the repository" in str(info.value)


MODIFY = """\
diff --git a/lib/x.py b/lib/x.py
index 1111111..2222222 100644
--- a/lib/x.py
+++ b/lib/x.py
@@ -1 +1 @@
-old
+new
"""

NEW_FILE = """\
diff --git a/lib/new.py b/lib/new.py
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/lib/new.py
@@ -0,0 +1 @@
+print("hi")
"""

RENAME = """\
diff --git a/old/name.py b/new/name.py
similarity index 100%
rename from old/name.py
rename to new/name.py
"""


def _symlink_patch(link: str, target: str) -> str:
    return (
        f"diff --git a/{link} b/{link}\n"
        "new file mode 120000\n"
        "index 0000000..4444444\n"
        "--- /dev/null\n"
        f"+++ b/{link}\n"
        "@@ -0,0 +1 @@\n"
        f"+{target}\n"
        "\\ No newline at end of file\n"
    )


def test_patch_paths_from_diff_git_and_headers() -> None:
    assert patch_paths(MODIFY) == ["lib/x.py"]


def test_patch_paths_ignores_dev_null_for_new_files() -> None:
    assert patch_paths(NEW_FILE) == ["lib/new.py"]


def test_patch_paths_includes_rename_sources_and_targets() -> None:
    assert patch_paths(RENAME) == ["new/name.py", "old/name.py"]


def test_patch_paths_collects_every_file_sorted_and_unique() -> None:
    assert patch_paths(NEW_FILE + MODIFY + RENAME) == ["lib/new.py", "lib/x.py", "new/name.py", "old/name.py"]


def test_patch_paths_plain_unified_diff_without_git_header() -> None:
    patch = "--- a/src/m.c\n+++ b/src/m.c\n@@ -1 +1 @@\n-a\n+b\n"
    assert patch_paths(patch) == ["src/m.c"]


@pytest.mark.parametrize(
    "patch",
    [
        MODIFY.replace("lib/x.py", "../x"),
        MODIFY.replace("a/lib/x.py", "/etc/passwd").replace("b/lib/x.py", "/etc/passwd"),
        MODIFY.replace("lib/x.py", ".git/config"),
        # only the ---/+++ header is hostile
        MODIFY.replace("+++ b/lib/x.py", "+++ b/../../etc/passwd"),
        # only the rename line is hostile
        RENAME.replace("rename to new/name.py", "rename to ../../outside.py"),
        RENAME.replace("rename from old/name.py", "copy from .git/HEAD"),
    ],
    ids=["dotdot", "absolute", "dotgit", "header-only", "rename-to", "copy-from"],
)
def test_patch_touching_outside_the_tree_is_rejected(patch: str) -> None:
    with pytest.raises(RequestRejected) as info:
        patch_paths(patch)
    assert info.value.code == "invalid_path"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "../x", "sub/../../x", ".git/config"])
def test_patch_creating_escaping_symlink_is_rejected(target: str) -> None:
    with pytest.raises(RequestRejected) as info:
        patch_paths(_symlink_patch("link", target))
    assert info.value.code == "invalid_path"
    assert "escapes the repository" in str(info.value)


def test_patch_symlink_target_is_resolved_relative_to_the_link() -> None:
    # From lib/deep/link, "../../x" is x at the root: in the tree.
    assert patch_paths(_symlink_patch("lib/deep/link", "../../x")) == ["lib/deep/link"]
    with pytest.raises(RequestRejected):
        patch_paths(_symlink_patch("lib/deep/link", "../../../x"))


def test_patch_creating_in_tree_symlink_is_fine() -> None:
    assert patch_paths(_symlink_patch("lib/link", "../README.md")) == ["lib/link"]


def test_patch_changing_mode_to_symlink_checks_target() -> None:
    patch = (
        "diff --git a/link b/link\n"
        "old mode 100644\n"
        "new mode 120000\n"
        "--- a/link\n"
        "+++ b/link\n"
        "@@ -1 +1 @@\n"
        "-text\n"
        "+/etc/shadow\n"
    )
    with pytest.raises(RequestRejected) as info:
        patch_paths(patch)
    assert info.value.code == "invalid_path"


def test_symlink_check_stops_at_the_next_file() -> None:
    # A symlink whose diff carries no added line must not borrow the next
    # file's first added line as its target.
    patch = (
        "diff --git a/link b/link\n"
        "new file mode 120000\n"
        "diff --git a/other.py b/other.py\n"
        "--- a/other.py\n"
        "+++ b/other.py\n"
        "@@ -1 +1 @@\n"
        "-x\n"
        "+/absolute/looking/text\n"
    )
    assert patch_paths(patch) == ["link", "other.py"]


def test_symlink_target_starting_with_plus_plus_is_checked() -> None:
    # BUG: the target line of a symlink whose target begins with "++" reads
    # "+++..." and is skipped as if it were a "+++ b/file" header, so the
    # target "++/../../etc" (which resolves to ../etc) is never checked.
    with pytest.raises(RequestRejected) as info:
        patch_paths(_symlink_patch("link", "++/../../etc"))
    assert info.value.code == "invalid_path"


def test_patch_path_with_a_space_is_still_checked() -> None:
    # BUG: paths are matched with \S+, so "dir name/../../../etc/passwd" is
    # read as "dir" and the '..' segments after the space are never checked.
    hostile = "dir name/../../../etc/passwd"
    patch = (
        f"diff --git a/{hostile} b/{hostile}\n"
        f"--- a/{hostile}\n"
        f"+++ b/{hostile}\n"
        "@@ -1 +1 @@\n"
        "-a\n"
        "+b\n"
    )
    with pytest.raises(RequestRejected) as info:
        patch_paths(patch)
    assert info.value.code == "invalid_path"
