"""mkdocs hooks: generate the reference pages from the code at every build.

- ``<!-- generated: config-reference -->`` in a page is replaced by the configuration
  reference rendered from the config Structs (docs/gen_config_reference.py);
- ``<!-- generated: record-schema -->`` by the record schema rendered from
  ``streamkit.model`` (docs/gen_record_schema.py);
- links from a page to files of the repository outside docs/ (``../examples/...``) point at
  ``repo_url`` when mkdocs.yml sets one, otherwise they become the repository path in code
  (a built site cannot link into a source checkout).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

_DOCS = Path(__file__).resolve().parent
if str(_DOCS) not in sys.path:
    sys.path.insert(0, str(_DOCS))

import gen_config_reference  # noqa: E402
import gen_record_schema  # noqa: E402

_MARKERS = {
    "<!-- generated: config-reference -->": gen_config_reference.render,
    "<!-- generated: record-schema -->": gen_record_schema.render,
}
_OUTSIDE = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<path>(?:\.\./)+[^)\s#]+)(?P<frag>#[^)]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, render in _MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    page_dir = (_DOCS / page.file.src_path).parent
    repo_root = _DOCS.parent
    repo_url = config.get("repo_url")

    def relink(m: re.Match[str]) -> str:
        target = (page_dir / m.group("path")).resolve()
        try:
            rel = target.relative_to(repo_root)
        except ValueError:
            return m.group(0)
        if target.is_relative_to(_DOCS):
            return m.group(0)
        if repo_url:
            return f"[{m.group('text')}]({repo_url.rstrip('/')}/blob/main/{rel.as_posix()})"
        text = m.group("text")
        return text if text.startswith("`") else f"{text} (`{rel.as_posix()}`)"

    return _OUTSIDE.sub(relink, markdown)
