"""Real open-source projects as test repositories, one per toolchain.

Each function makes a git repository (in a directory the caller gives) from
a real project fetched at test time from a registry this machine reaches
(PyPI with ``pip download``, Debian with ``apt-get download``; the Node
project's dependencies come from npm when its environment image runs
``npm ci``), with two commits (``base`` and ``head``), and returns a
:class:`Project`: what a repository's configuration says (toolchain,
environment setup and inputs, snapshot setup, validation command) plus a
good change and a mutant as request ``changes`` objects, each with the
commit it applies to and the verdict it should get.

Downloads go to a cache directory (pass one per test session) and are
reused: in all, well under 1 MB.

- ``python``: python-slugify 9.1.2 (base) and 9.1.3 (head), both sdists;
  9.1.3 is a real bug fix with new tests (word-boundary truncation kept
  repeated delimiters wrong). The tests import text-unidecode, a PyPI
  dependency installed by the environment setup from ``requirements-test.txt``
  (identical in both commits). Debian's pytest runs them.
- ``node``: a small library on npm's ``semver``, tested by ``node --test``
  with ``@reporters/junit`` writing JUnit; ``npm ci`` from the committed
  package-lock.json installs both.
- ``rust``: heck 0.4.0, the source in Debian's librust-heck-dev, with its
  ``unicode`` feature on, so it needs the unicode-segmentation crate from
  librust-unicode-segmentation-dev (installed by the environment setup);
  tests run by ``genesis-cargo-test`` (images/toolchain-rust).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

GIT = ["-c", "user.name=genesis", "-c", "user.email=genesis@localhost", "-c", "commit.gpgsign=false"]
JUNIT = "/genesis/out/junit.xml"


@dataclass(frozen=True)
class Change:
    """A request's ``changes`` object, the commit it applies to, and the verdict it should get."""

    changes: dict
    applies_to: str  # commit id
    expect: str  # "pass": every test passes; "fail": some test fails
    description: str


@dataclass(frozen=True)
class Project:
    """A repository made from a real project, and what Genesis is told about it."""

    name: str
    toolchain: str
    repo: Path
    base: str  # commit id: the older release
    head: str  # commit id: the newer release ("upstream change"), or base plus the good change
    environment: dict  # {"setup": [shell commands], "inputs": [globs]}
    snapshot_setup: list[str]
    validation: list[str]
    good: Change  # applies to base
    mutant: Change  # applies to head
    known_failing: tuple[str, ...] = ()  # tests that fail on base as released
    missing_environment: str = ""  # text in the log when the environment setup is skipped
    description: str = ""
    upstream: list[str] = field(default_factory=list)  # what was downloaded, name==version


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *GIT, *args], check=True, capture_output=True,
                          text=True).stdout


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD").strip()


def _replace_tree(repo: Path, source: Path, extra: dict[str, str]) -> None:
    """Make the working tree ``source``'s files plus ``extra`` (path -> text)."""
    for child in repo.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.copytree(source, repo, dirs_exist_ok=True)
    for rel, text in extra.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)


def _init(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)


def _edit_patch(repo: Path, commit: str, edits: dict[str, str]) -> str:
    """The unified diff that ``edits`` (path -> new text, or a (old, new) line swap)
    make to ``commit``; the repository is left at ``commit``, clean."""
    _git(repo, "checkout", "-q", commit)
    try:
        for rel, edit in edits.items():
            path = repo / rel
            if isinstance(edit, tuple):
                old, new = edit
                text = path.read_text()
                assert text.count(old) == 1, f"{old!r} is not once in {rel}"
                path.write_text(text.replace(old, new))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(edit)
        _git(repo, "add", "-A")
        return _git(repo, "diff", "--cached", "--no-color", commit)
    finally:
        _git(repo, "reset", "-q", "--hard", commit)
        _git(repo, "checkout", "-q", "main")


# --- Python: python-slugify ------------------------------------------------

SLUGIFY_BASE, SLUGIFY_HEAD = "9.1.2", "9.1.3"
SLUGIFY_REQUIREMENTS = "# Test dependencies, installed by the environment setup.\ntext-unidecode==1.3\n"


def _pip_sdist(name: str, version: str, cache: Path) -> Path:
    """The sdist of ``name==version`` from PyPI, downloaded once into ``cache``."""
    folder = cache / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"{name.lower().replace(sep, other)}-{version}.tar.gz" for sep, other in (("-", "_"), ("_", "-"))}
    found = [p for p in folder.glob("*.tar.gz") if p.name.lower() in names]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", name,
                        "-d", str(folder), f"{name}=={version}"], check=True, capture_output=True, timeout=300)
        found = [p for p in folder.glob("*.tar.gz") if p.name.lower() in names]
    (archive,) = found
    return archive


def _unpack_sdist(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (root,) = [p for p in dest.iterdir() if p.is_dir()]
    return root


def python_project(tmp: Path, cache: Path) -> Project:
    """python-slugify 9.1.2 -> 9.1.3, tests by Debian's pytest, text-unidecode from PyPI."""
    repo = tmp / "python-slugify"
    _init(repo)
    commits = []
    for version in (SLUGIFY_BASE, SLUGIFY_HEAD):
        with tempfile.TemporaryDirectory() as unpacked:
            source = _unpack_sdist(_pip_sdist("python-slugify", version, cache), Path(unpacked))
            _replace_tree(repo, source, {"requirements-test.txt": SLUGIFY_REQUIREMENTS})
        commits.append(_commit(repo, f"python-slugify {version} (sdist from PyPI)"))
    base, head = commits
    good = _git(repo, "diff", "--no-color", base, head)
    mutant = _edit_patch(repo, head, {"slugify/slugify.py": (
        "        text = text.lower()\n", "        text = text\n")})
    return Project(
        name="python-slugify", toolchain="python", repo=repo, base=base, head=head,
        environment={"setup": ["uv pip install -r requirements-test.txt"], "inputs": ["requirements*.txt"]},
        snapshot_setup=[],
        validation=["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={JUNIT}", "tests"],
        good=Change({"patch": good}, base, "pass",
                    "the 9.1.3 release: keep repeated delimiters in word-boundary truncation, with new tests"),
        mutant=Change({"patch": mutant}, head, "fail", "9.1.3 that no longer lowercases"),
        missing_environment="ModuleNotFoundError: No module named 'text_unidecode'",
        description="python-slugify from PyPI; tests import text-unidecode (a PyPI dependency)",
        upstream=[f"python-slugify=={SLUGIFY_BASE}", f"python-slugify=={SLUGIFY_HEAD}", "text-unidecode==1.3"],
    )


# --- Node: a small library on semver ---------------------------------------

NODE_PACKAGE = {
    "name": "release-picker", "version": "1.0.0", "private": True, "license": "MIT",
    "description": "Picks releases from a list of git tags (a Genesis test fixture on npm's semver).",
    "scripts": {"test": "node --test --test-reporter=spec --test-reporter-destination=stdout "
                        f"--test-reporter=@reporters/junit --test-reporter-destination={JUNIT}"},
    "dependencies": {"semver": "7.6.3"},
    "devDependencies": {"@reporters/junit": "2.1.3"},
}
# What `npm install --package-lock-only` writes for NODE_PACKAGE (npm 9 and
# later read lockfile v3); the integrity hashes are the registry's.
NODE_LOCK = {
    "name": "release-picker", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "release-picker", "version": "1.0.0", "license": "MIT",
             "dependencies": {"semver": "7.6.3"}, "devDependencies": {"@reporters/junit": "2.1.3"}},
        "node_modules/@reporters/junit": {
            "version": "2.1.3",
            "resolved": "https://registry.npmjs.org/@reporters/junit/-/junit-2.1.3.tgz",
            "integrity": "sha512-Va0xKNCLTGJBe+xyXPNKvae2e437722vqbc5o2WaRtbycCyQktLiFwN6mEvuvv3l7UHLaRq8w9+pWeOicsg7NA==",
            "dev": True, "license": "MIT"},
        "node_modules/semver": {
            "version": "7.6.3",
            "resolved": "https://registry.npmjs.org/semver/-/semver-7.6.3.tgz",
            "integrity": "sha512-oVekP1cKtI+CTDvHWYFUcMtsK/00wmAEfyqKfNdARm8u1wNVhSgaX7A8d4UuIlUI5e84iEwOhs7ZPYRmzU9U6A==",
            "license": "ISC", "bin": {"semver": "bin/semver.js"}, "engines": {"node": ">=10"}},
    },
}
NODE_LIB = """\
'use strict';
const semver = require('semver');

/** The tags that name a release (`v1.2.3`, `1.2.3`), highest version first. */
function releases(tags, options = {}) {
  const found = [];
  for (const tag of tags) {
    const version = semver.clean(tag, { loose: true });
    if (version === null) continue;
    if (!options.includePrereleases && semver.prerelease(version)) continue;
    found.push({ tag, version });
  }
  return found.sort((a, b) => semver.rcompare(a.version, b.version));
}

/** The tag of the highest release, or null. */
function latest(tags, options) {
  const all = releases(tags, options);
  return all.length ? all[0].tag : null;
}

/** The version after `current` for a `major`, `minor` or `patch` release. */
function nextVersion(current, kind) {
  if (!['major', 'minor', 'patch'].includes(kind)) throw new TypeError(`unknown release kind: ${kind}`);
  return semver.inc(current, kind);
}

module.exports = { releases, latest, nextVersion };
"""
NODE_TEST = """\
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { releases, latest, nextVersion } = require('../lib/releases');

const TAGS = ['v1.2.0', 'v1.10.0', 'nightly', 'v1.9.3', '2.0.0-rc.1', 'v0.9.0'];

test('orders releases by version, not by text', () => {
  assert.deepStrictEqual(releases(TAGS).map((r) => r.tag), ['v1.10.0', 'v1.9.3', 'v1.2.0', 'v0.9.0']);
});
test('ignores tags that are not versions', () => {
  assert.ok(!releases(TAGS).some((r) => r.tag === 'nightly'));
});
test('leaves out prereleases unless asked', () => {
  assert.strictEqual(latest(TAGS), 'v1.10.0');
  assert.strictEqual(latest(TAGS, { includePrereleases: true }), '2.0.0-rc.1');
});
test('has no latest release without releases', () => {
  assert.strictEqual(latest(['nightly']), null);
});
test('computes the next version', () => {
  assert.strictEqual(nextVersion('1.9.3', 'minor'), '1.10.0');
  assert.strictEqual(nextVersion('1.9.3', 'major'), '2.0.0');
  assert.throws(() => nextVersion('1.9.3', 'sideways'), TypeError);
});
"""
NODE_GOOD_LIB = NODE_LIB.replace("""module.exports = { releases, latest, nextVersion };""", """\
/** The tag of the highest release that satisfies `range` (e.g. `^1.2`), or null. */
function latestSatisfying(tags, range) {
  const match = releases(tags).find((r) => semver.satisfies(r.version, range));
  return match ? match.tag : null;
}

module.exports = { releases, latest, latestSatisfying, nextVersion };""")
NODE_GOOD_TEST = """\
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { latestSatisfying } = require('../lib/releases');

const TAGS = ['v1.2.0', 'v1.10.0', 'v1.9.3', '2.0.0', 'v0.9.0'];

test('finds the highest release in a range', () => {
  assert.strictEqual(latestSatisfying(TAGS, '^1.2'), 'v1.10.0');
  assert.strictEqual(latestSatisfying(TAGS, '~1.9'), 'v1.9.3');
});
test('finds none outside every release', () => {
  assert.strictEqual(latestSatisfying(TAGS, '>=3'), null);
});
"""


def node_project(tmp: Path, cache: Path) -> Project:  # noqa: ARG001 - npm ci downloads, in the environment build
    """A small library on npm's semver; npm ci installs it and @reporters/junit."""
    repo = tmp / "release-picker"
    _init(repo)
    files = {"package.json": json.dumps(NODE_PACKAGE, indent=2) + "\n",
             "package-lock.json": json.dumps(NODE_LOCK, indent=2) + "\n",
             ".gitignore": "node_modules/\n",
             "lib/releases.js": NODE_LIB, "test/releases.test.js": NODE_TEST}
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    base = _commit(repo, "release-picker 1.0.0")
    good = _edit_patch(repo, base, {"lib/releases.js": NODE_GOOD_LIB, "test/satisfying.test.js": NODE_GOOD_TEST})
    (repo / "lib/releases.js").write_text(NODE_GOOD_LIB)
    (repo / "test/satisfying.test.js").write_text(NODE_GOOD_TEST)
    head = _commit(repo, "latestSatisfying: the highest release in a semver range")
    mutant = _edit_patch(repo, head, {"lib/releases.js": (
        "semver.rcompare(a.version, b.version)", "semver.compare(a.version, b.version)")})
    return Project(
        name="release-picker", toolchain="node", repo=repo, base=base, head=head,
        environment={"setup": ["npm ci --no-audit --no-fund && npm cache clean --force"],
                     "inputs": ["package.json", "package-lock.json"]},
        snapshot_setup=[],
        validation=["npm", "test"],
        good=Change({"patch": good}, base, "pass", "adds latestSatisfying (semver ranges) with two tests"),
        mutant=Change({"patch": mutant}, head, "fail", "sorts releases lowest first"),
        missing_environment="Cannot find package '@reporters/junit'",  # ERR_MODULE_NOT_FOUND, before any test
        description="a small library on npm's semver 7.6.3; node --test with @reporters/junit 2.1.3",
        upstream=["semver@7.6.3", "@reporters/junit@2.1.3"],
    )


# --- Rust: heck from Debian -------------------------------------------------

HECK_PACKAGE = "librust-heck-dev"
# Cargo.lock as cargo 0.66 (Debian bookworm) writes it against Debian's
# directory source: the checksum is the one in the crate's .cargo-checksum.json.
HECK_LOCK = """\
# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 3

[[package]]
name = "heck"
version = "0.4.0"
dependencies = [
 "unicode-segmentation",
]

[[package]]
name = "unicode-segmentation"
version = "1.9.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "7e8820f5d777f6224dc4be3632222971ac30164d4a258d595640799554ebfd99"
"""
HECK_TRAIN = """\
use std::fmt;

use crate::{capitalize, transform};

/// This trait defines a train case conversion.
///
/// In Train-Case, word boundaries are indicated by hyphens and words start
/// with Capital Letters.
///
/// ## Example:
///
/// ```rust
/// use heck::ToTrainCase;
///
/// let sentence = "We are going to inherit the earth.";
/// assert_eq!(sentence.to_train_case(), "We-Are-Going-To-Inherit-The-Earth");
/// ```
pub trait ToTrainCase: ToOwned {
    /// Convert this type to Train-Case.
    fn to_train_case(&self) -> Self::Owned;
}

impl ToTrainCase for str {
    fn to_train_case(&self) -> Self::Owned {
        AsTrainCase(self).to_string()
    }
}

/// This wrapper performs a train case conversion in [`fmt::Display`].
pub struct AsTrainCase<T: AsRef<str>>(pub T);

impl<T: AsRef<str>> fmt::Display for AsTrainCase<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        transform(self.0.as_ref(), capitalize, |f| write!(f, "-"), f)
    }
}

#[cfg(test)]
mod tests {
    use super::ToTrainCase;

    macro_rules! t {
        ($t:ident : $s1:expr => $s2:expr) => {
            #[test]
            fn $t() {
                assert_eq!($s1.to_train_case(), $s2)
            }
        };
    }

    t!(test1: "CamelCase" => "Camel-Case");
    t!(test2: "This is Human case." => "This-Is-Human-Case");
    t!(test3: "MixedUP CamelCase, with some Spaces" => "Mixed-Up-Camel-Case-With-Some-Spaces");
    t!(test4: "mixed_up_ snake_case with some _spaces" => "Mixed-Up-Snake-Case-With-Some-Spaces");
    t!(test5: "kebab-case" => "Kebab-Case");
    t!(test6: "SHOUTY_SNAKE_CASE" => "Shouty-Snake-Case");
    t!(test7: "XMLHttpRequest" => "Xml-Http-Request");
}
"""


def _deb_crate(package: str, cache: Path) -> Path:
    """The crate source a librust-*-dev package ships, downloaded once into ``cache``."""
    folder = cache / "debian"
    folder.mkdir(parents=True, exist_ok=True)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True, timeout=300)
        debs = sorted(folder.glob(f"{package}_*.deb"))
    unpacked = folder / debs[-1].stem
    if not unpacked.exists():
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], check=True)
    (crate,) = (unpacked / "usr/share/cargo/registry").iterdir()
    return crate


def rust_project(tmp: Path, cache: Path) -> Project:
    """heck 0.4.0 from Debian with its unicode feature (unicode-segmentation from Debian)."""
    crate = _deb_crate(HECK_PACKAGE, cache)
    repo = tmp / "heck"
    _init(repo)
    shutil.copytree(crate, repo, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".cargo-checksum.json", ".cargo_vcs_info.json"))
    (repo / ".gitignore").write_text("/target\n")
    # The unicode feature on by default, so that a plain `cargo test` uses unicode-segmentation.
    manifest = (repo / "Cargo.toml").read_text()
    (repo / "Cargo.toml").write_text(manifest.replace('default = []', 'default = ["unicode"]'))
    (repo / "Cargo.lock").write_text(HECK_LOCK)
    base = _commit(repo, f"heck {crate.name.rpartition('-')[2]} (source from Debian's {HECK_PACKAGE})")
    lib = (repo / "src/lib.rs").read_text().replace("mod title;\n", "mod title;\nmod train;\n").replace(
        "pub use title::{AsTitleCase, ToTitleCase};\n",
        "pub use title::{AsTitleCase, ToTitleCase};\npub use train::{AsTrainCase, ToTrainCase};\n")
    good = _edit_patch(repo, base, {"src/train.rs": HECK_TRAIN, "src/lib.rs": lib})
    (repo / "src/train.rs").write_text(HECK_TRAIN)
    (repo / "src/lib.rs").write_text(lib)
    head = _commit(repo, "Train-Case (ToTrainCase, AsTrainCase)")
    mutant = _edit_patch(repo, head, {"src/lib.rs": (
        "        write!(f, \"{}\", c.to_uppercase())?;\n        if let Some((i, _)) = char_indices.next() {",
        "        write!(f, \"{}\", c.to_lowercase())?;\n        if let Some((i, _)) = char_indices.next() {")})
    return Project(
        name="heck", toolchain="rust", repo=repo, base=base, head=head,
        environment={"setup": ["apt-get update && apt-get install -y --no-install-recommends "
                               "librust-unicode-segmentation-dev && apt-get clean && rm -rf /var/lib/apt/lists/*"],
                     "inputs": ["Cargo.toml", "Cargo.lock"]},
        snapshot_setup=[],
        validation=["genesis-cargo-test"],
        good=Change({"patch": good}, base, "pass", "adds Train-Case (as heck 0.4.1 did) with tests"),
        mutant=Change({"patch": mutant}, head, "fail", "capitalize() lowercases the first letter"),
        missing_environment="unicode-segmentation",
        description="heck 0.4.0 from Debian's librust-heck-dev, unicode feature on by default",
        upstream=[f"{HECK_PACKAGE} ({crate.name})", "librust-unicode-segmentation-dev (environment setup)"],
    )


PROJECTS = {"python": python_project, "node": node_project, "rust": rust_project}
