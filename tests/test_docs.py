"""The docs site builds strictly: a broken link, a missing page, an API reference that
does not resolve or a docstring that disagrees with its signature fails the build.

``mkdocs build --strict`` (mkdocs.yml) renders docs/*.md, the notebooks with their
stored outputs and the API reference from the docstrings (mkdocstrings). The
tooling is the ``docs`` extra (``ci/setup.sh`` installs it).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
    except ImportError as err:
        pytest.fail(f"the docs tooling is missing ({err}): pip install -e '.[docs]' (ci/setup.sh installs it)")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=600, env=env)
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "ERROR" in line)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log or proc.stderr[-4000:]}"
    return out


def _text(path: Path) -> str:
    return re.sub(r"<[^>]+>", " ", path.read_text())


@pytest.mark.timeout(900)
def test_site_builds_strictly_with_every_page_api_entry_and_notebook(site):
    import hvdagent
    import hvdagent.callbacks
    import hvdagent.elastic

    assert (site / "index.html").is_file()
    nav = re.findall(r"^\s+- [^:]+: (\S+\.(?:md|ipynb))$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").glob("*.md"))
    assert set(pages) <= set(nav), f"docs pages missing from mkdocs.yml's nav: {sorted(set(pages) - set(nav))}"
    for page in nav:
        html = site / Path(page).with_suffix("") / "index.html"
        if Path(page).stem in ("index", "README"):  # a folder's own page
            html = site / Path(page).parent / "index.html"
        assert html.is_file(), f"{page} was not rendered ({html})"

    # Every public name has its API entry, rendered from its docstring.
    api = {p.stem: _text(site / "api" / p.stem / "index.html") for p in (ROOT / "docs" / "api").glob("*.md")
           if p.stem != "index"}
    documented = " ".join(api.values())
    wanted = [n for n in hvdagent.__all__ if n not in ("__version__", "callbacks", "Average", "Sum", "Adasum")]
    wanted += hvdagent.callbacks.__all__ + hvdagent.elastic.__all__
    assert [n for n in wanted if not re.search(rf"\b{re.escape(n)}\b", documented)] == []
    assert "Average" in api["horovod"] and "adasum" in api["horovod"]
    first_line = hvdagent.DistributedAgent.__doc__.strip().splitlines()[0]
    assert " ".join(first_line.split()) in " ".join(api["training"].split())
    # The doctest examples are code blocks, not running text.
    assert 'class="gp">&gt;&gt;&gt;' in (site / "api" / "training" / "index.html").read_text()

    # The notebooks show their stored outputs, plots included.
    for book in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / book.stem / "index.html").read_text()
        if "plt." in book.read_text():
            assert "data:image/png;base64," in html, f"{book.name}: no plot on its page"
        assert "jp-OutputArea-output" in html, f"{book.name}: its page shows no outputs"


def test_readme_links_point_at_files_of_the_repository():
    """The README is read on the repository's front page, outside the site: its relative links are checked here."""
    text = (ROOT / "README.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert len(links) >= 10
    assert [t for t in links if not (ROOT / t.split("#")[0]).exists()] == []
    assert len(text.splitlines()) <= 160  # a front page, not the manual (that is docs/)
