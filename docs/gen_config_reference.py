"""Generate the configuration reference (Markdown) from the config Structs.

The page is rendered from :class:`streamkit.config.AppConfig` and every Struct reachable from
it: keys, types, constraints, defaults, and descriptions taken from the Structs' docstrings
(``key: text`` entries in the class docstring, or a string literal right after a field).
``docs/hooks.py`` runs it at every ``mkdocs build``, so the published page cannot drift from
the code. Run it directly to print the page::

    python docs/gen_config_reference.py
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect as mi

_KEY = r"`{0,2}[a-z_][a-z0-9_]*`{0,2}"
_ENTRY = re.compile(rf"^(?P<keys>{_KEY}(?:\s*(?:/|,|and)\s*{_KEY})*):\s+(?P<text>.*)$")


@dataclass
class _Section:
    path: str
    anchor: str
    cls: type[msgspec.Struct]
    tag: str | None = None
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)


def field_docs(cls: type[msgspec.Struct]) -> tuple[str, dict[str, str]]:
    """(the Struct's own description, {field name: description}) from its docstrings and,
    for inherited fields, its base classes' docstrings."""
    intro, docs = _own_docs(cls)
    for base in cls.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, msgspec.Struct) and base.__doc__:
            for key, text in _own_docs(base)[1].items():
                docs.setdefault(key, text)
    return intro, docs


def _own_docs(cls: type[msgspec.Struct]) -> tuple[str, dict[str, str]]:
    doc = inspect.cleandoc(cls.__doc__ or "")
    intro: list[str] = []
    docs: dict[str, str] = {}
    current: list[str] | None = None
    keys: list[str] = []
    names = {f.name for f in msgspec.structs.fields(cls)} if _is_struct(cls) else set()

    def flush() -> None:
        if current is not None:
            text = " ".join(part.strip() for part in current)
            for key in keys:
                docs.setdefault(key, text)

    for line in doc.splitlines():
        m = _ENTRY.match(line)
        candidates = (
            [k.strip("`") for k in re.split(r"\s*(?:/|,|and)\s*", m.group("keys"))] if m else []
        )
        if m and candidates and all(k in names for k in candidates):
            flush()
            keys, current = candidates, [m.group("text")]
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            current.append(line)
        else:
            flush()
            current, keys = None, []
            intro.append(line)
    flush()
    docs.update({k: v for k, v in _attribute_docstrings(cls).items() if k not in docs})
    return "\n".join(intro).strip(), docs


def _is_struct(cls: type) -> bool:
    return issubclass(cls, msgspec.Struct) and cls is not msgspec.Struct


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """Field docstrings written as a string literal right after the field."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    out: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out[prev.target.id] = " ".join(inspect.cleandoc(node.value.value).split())
    return out


def render_type(t: mi.Type, links: dict[type, str]) -> str:
    """A short, readable type: ``float > 0``, ``list[str]``, ``[FeedConfig](#feeds)``."""
    if isinstance(t, mi.Metadata):
        return render_type(t.type, links)
    if isinstance(t, mi.StructType):
        anchor = links.get(t.cls)
        return f"[{t.cls.__name__}](#{anchor})" if anchor else t.cls.__name__
    if isinstance(t, mi.UnionType):
        return " \\| ".join(render_type(x, links) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f"`{v}`" for v in t.values)
    if isinstance(t, mi.ListType):
        return f"list[{render_type(t.item_type, links)}]"
    if isinstance(t, mi.DictType):
        return f"map[{render_type(t.key_type, links)}, {render_type(t.value_type, links)}]"
    if isinstance(t, mi.IntType | mi.FloatType):
        name = "int" if isinstance(t, mi.IntType) else "float"
        bounds = [
            f"{op} {v}"
            for op, v in (("≥", t.ge), ("> ", t.gt), ("≤", t.le), ("<", t.lt))
            if v is not None
        ]
        return name + (" " + ", ".join(b.replace("> ", ">") for b in bounds) if bounds else "")
    simple = {
        mi.StrType: "str",
        mi.BoolType: "bool",
        mi.NoneType: "null",
        mi.AnyType: "any",
    }
    return simple.get(type(t), type(t).__name__.removesuffix("Type").lower())


def _default(f: mi.Field) -> str:
    if f.required:
        return "**required**"
    value: Any = f.default
    if value is msgspec.NODEFAULT and f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
    if isinstance(value, msgspec.Struct):
        return "(section defaults)"
    return f"`{msgspec.json.encode(value).decode()}`"


def _structs_in(t: mi.Type) -> list[mi.StructType]:
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.Metadata):
        return _structs_in(t.type)
    if isinstance(t, mi.UnionType):
        return [s for x in t.types for s in _structs_in(x)]
    if isinstance(t, mi.ListType):
        return _structs_in(t.item_type)
    if isinstance(t, mi.DictType):
        return _structs_in(t.value_type)
    return []


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top-level"


def _collect(root: type[msgspec.Struct]) -> list[_Section]:
    """Every Struct reachable from ``root``, breadth first, each at the first key path where
    it appears (a Struct used in several places is documented once and linked)."""
    sections: list[_Section] = []
    seen: dict[type, _Section] = {}
    queue: list[tuple[str, mi.StructType]] = [("", mi.type_info(root))]  # type: ignore[list-item]
    while queue:
        path, st = queue.pop(0)
        if st.cls in seen:
            continue
        tag = st.tag if isinstance(st.tag, str) else None
        label = f"{path} (type: {tag})" if tag else path
        section = _Section(label or "top level", _anchor(label), st.cls, tag)
        seen[st.cls] = section
        sections.append(section)
        for f in st.fields:
            child = f"{path}.{f.name}" if path else f.name
            if isinstance(_unwrap(f.type), mi.ListType):
                child += "[]"
            queue.extend((child, s) for s in _structs_in(f.type))
    return sections


def _unwrap(t: mi.Type) -> mi.Type:
    if isinstance(t, mi.Metadata):
        return _unwrap(t.type)
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _unwrap(rest[0]) if len(rest) == 1 else t
    return t


def render(root: type[msgspec.Struct] | None = None) -> str:
    """The whole reference page (Markdown) for ``root`` (default: ``AppConfig``)."""
    if root is None:
        from streamkit.config import AppConfig

        root = AppConfig
    sections = _collect(root)
    links = {s.cls: s.anchor for s in sections}
    out = [
        "<!-- Generated by docs/gen_config_reference.py from the config Structs at every "
        "build; do not edit. -->",
        "",
    ]
    for section in sections:
        info = mi.type_info(section.cls)
        assert isinstance(info, mi.StructType)
        intro, docs = field_docs(section.cls)
        out.append(f"## `{section.path}` {{#{section.anchor}}}")
        out.append("")
        if intro:
            out.append(_one_paragraph(intro))
            out.append("")
        if section.tag:
            out.append(f"Selected with `type: {section.tag}`.")
            out.append("")
        out.append("| key | type | default | description |")
        out.append("| --- | --- | --- | --- |")
        for f in info.fields:
            desc = docs.get(f.name) or _summary_of_linked(f.type)
            desc = rst_to_md(desc).replace("|", "\\|")
            out.append(f"| `{f.name}` | {render_type(f.type, links)} | {_default(f)} | {desc} |")
        out.append("")
    return "\n".join(out)


def _summary_of_linked(t: mi.Type) -> str:
    """First sentence of the (first) Struct a field holds: the description of a section key
    whose own Struct does not describe it."""
    structs = {st.cls: st for st in _structs_in(t)}
    if len(structs) > 1:
        tags = [st.tag for st in structs.values() if isinstance(st.tag, str)]
        return f"Each item is one of: {', '.join(f'`type: {t}`' for t in tags)}." if tags else ""
    for st in structs.values():
        doc = " ".join((field_docs(st.cls)[0] or "").split())
        if doc:
            return doc.split(". ")[0].rstrip(".") + "."
    return ""


def _one_paragraph(text: str) -> str:
    return "\n\n".join(rst_to_md(" ".join(p.split())) for p in text.split("\n\n"))


_ROLE = re.compile(r":[a-z]+:`(?P<tilde>~?)(?P<target>[^`]+)`")


def rst_to_md(text: str) -> str:
    """Docstring markup to Markdown: ``code`` -> `code`, :class:`~a.B` -> `B`."""

    def role(m: re.Match[str]) -> str:
        target = m.group("target")
        return f"`{target.rsplit('.', 1)[-1] if m.group('tilde') else target}`"

    return _ROLE.sub(role, text).replace("``", "`")


if __name__ == "__main__":
    print(render())
