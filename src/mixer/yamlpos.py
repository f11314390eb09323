"""YAML loading that remembers where every key and value came from.

PyYAML's constructors drop node positions and silently let a duplicate key win; both would make
validation errors unlocatable. We compose the node graph ourselves and keep a position index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from mixer.errors import Diagnostic

Path_ = tuple  # a path into the document: keys and list indexes
MERGE_TAG = "tag:yaml.org,2002:merge"  # the `<<` key
SCALAR_TAGS = {"str", "int", "float", "bool", "null", "timestamp", "binary"}  # YAML's own, as `!!int`


@dataclass
class Located:
    """Plain Python data plus the 1-based (line, col) of each key and value, by document path. A recipe that
    extends another mixes nodes of several files: `files` names the file of each such node."""

    file: str
    data: Any
    key_pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    value_pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    files: dict[Path_, str] = field(default_factory=dict)
    # keys a recipe that extends another deleted with `null`, and where: what still names them is told so
    removed: dict[Path_, tuple[str, int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[str, int, int]:
        """File and position of `path` (its key when `key`), else of the nearest enclosing node that has one."""
        path = tuple(path)
        while True:
            table = self.key_pos if key else self.value_pos
            if path in table:
                return (self.file_of(path), *table[path])
            if path in self.value_pos:
                return (self.file_of(path), *self.value_pos[path])
            if not path:
                return (self.file, 1, 1)
            path = path[:-1]

    def file_of(self, path: Path_) -> str:
        return self.files.get(tuple(path), self.file)

    def diag(self, path: Path_, message: str, hint: str | None = None, *, key: bool = False) -> Diagnostic:
        return Diagnostic(*self.where(path, key=key), message, hint)


def load_packaged(text: str) -> Any:
    """Plain data from a YAML file this project ships (registry entries, evolve operators, prices), read on
    every command: libyaml's C loader when PyYAML was built with it is ~10x faster than the Python one, which
    was a sixth of a no-op rebuild. Recipes keep the Python loader: its error messages are the ones tested."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # a safe loader either way


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _syntax_hint(exc: yaml.MarkedYAMLError) -> str:
    """The usual causes, named: a tab (YAML indents with spaces only), an unquoted glob starting with `*` (an
    alias to YAML), an unquoted value holding ': ', and a comma or closing bracket missing in `{...}` or
    `[...]`, which PyYAML reports where it gave up (often the end of the file), not where the brackets were
    opened."""
    if "'\\t'" in (exc.problem or ""):
        return "YAML indents with spaces, not tabs: replace the tab"
    if exc.context == "while scanning an alias":
        return 'a value starting with * is read as a YAML alias: quote a glob, e.g. path: "*.jsonl" or "**/*.jsonl"'
    if exc.context == "while scanning an anchor":
        return "a value starting with & is read as a YAML anchor: quote it"
    if (exc.problem or "").startswith("found undefined alias"):
        return (
            "an alias (*name) needs its anchor (&name) earlier in the same file: a base recipe's anchors are not "
            "seen by the recipes that extend it"
        )
    if (exc.problem or "").startswith("but found another document"):
        return "a recipe is one YAML document: delete this `---` and what follows, or give it a file of its own"
    if (exc.problem or "").startswith("mapping values are not allowed"):
        return "a value with ': ' in it must be quoted, e.g. description: \"Tulu 2: the SFT mix\""
    opened = exc.context_mark
    if opened is not None and exc.context and exc.context.startswith("while parsing a flow"):
        where = f"line {opened.line + 1}, column {opened.column + 1}"
        return f"in the brackets opened at {where}: a comma or the closing bracket is missing"
    return "check indentation and quoting here"


def _tag_problem(node: yaml.Node) -> tuple[str, str]:
    """Message and hint for a value its tag cannot make: PyYAML raised them as a traceback. `!env` and the like
    are other tools' extensions; a recipe has `${VAR}` for what they are mostly used for."""
    name = node.tag.removeprefix("tag:yaml.org,2002:")
    if name in SCALAR_TAGS:
        return f"{node.value!r} cannot be read as !!{name}", f"drop the tag, or write a valid {name}"
    return (
        f"unknown YAML tag {'!!' + name if name != node.tag else node.tag}",
        "recipes are plain YAML: drop the tag (for an environment variable, write ${NAME} inside a string)",
    )


def load_located(text: str, file: str) -> Located:
    """Parse one YAML document. Syntax errors and duplicate keys land in `problems`, not exceptions."""
    located = Located(file=file, data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or str(exc)
        located.problems.append(Diagnostic(file, line, col, f"invalid YAML: {problem}", _syntax_hint(exc)))
        return located
    finally:
        loader.dispose()
    if node is None:
        located.data = {}
        return located
    constructor = yaml.SafeLoader("")
    inside: set[int] = set()  # the collection nodes being built: an alias to one of them would never end

    def build(n: yaml.Node, path: Path_) -> Any:
        located.value_pos[path] = _mark(n)
        if isinstance(n, yaml.MappingNode | yaml.SequenceNode):
            if id(n) in inside:
                located.problems.append(
                    Diagnostic(file, *_mark(n), "an alias refers to a mapping or list that contains it (a loop)")
                )
                return None
            inside.add(id(n))
            try:
                return build_collection(n, path)
            finally:
                inside.discard(id(n))
        try:
            return constructor.construct_object(n, deep=True)
        except (yaml.constructor.ConstructorError, ValueError, TypeError):
            located.problems.append(Diagnostic(file, *_mark(n), *_tag_problem(n)))
            return None

    def merged(merge_node: yaml.Node, path: Path_) -> dict[Any, Any]:
        """What `<<: *anchor` (or `<<: [*a, *b]`) brings into the mapping at `path`. Of several mappings the first
        listed wins, as YAML's merge rule says (PyYAML 6 lets the last win). Their keys are located where the
        anchor wrote them, so an error in a shared value points at the one place to fix it."""
        sources = merge_node.value if isinstance(merge_node, yaml.SequenceNode) else [merge_node]
        if not sources or not all(isinstance(m, yaml.MappingNode) for m in sources):
            located.problems.append(
                Diagnostic(
                    file,
                    *_mark(merge_node),
                    "a merge key (<<) takes a mapping or a list of mappings",
                    "name an anchored mapping: <<: *defaults, or <<: [*a, *b]",
                )
            )
            return {}
        out: dict[Any, Any] = {}
        for mapping in reversed(sources):  # later ones first, so earlier ones override them in place
            brought = build(mapping, path)
            out.update(brought if isinstance(brought, dict) else {})
        return out

    def build_collection(n: yaml.MappingNode | yaml.SequenceNode, path: Path_) -> Any:
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            merges = [(key, value) for key, value in n.value if key.tag == MERGE_TAG]
            if merges:
                here = located.value_pos[path]
                for _, merge_node in merges:
                    out.update(merged(merge_node, path))
                located.value_pos[path] = here  # the merged mappings' own positions recorded over it
            written: set[Any] = set()  # keys this mapping writes itself: they override merged ones
            for key_node, value_node in n.value:
                if key_node.tag == MERGE_TAG:
                    if key_node is not merges[0][0]:
                        located.problems.append(
                            Diagnostic(file, *_mark(key_node), "duplicate merge key (<<)", "merge a list: <<: [*a, *b]")
                        )
                    continue
                key = build(key_node, (*path, "<key>"))
                located.value_pos.pop((*path, "<key>"), None)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    located.problems.append(Diagnostic(file, *_mark(key_node), "mapping keys must be plain scalars"))
                    continue
                if key in written:
                    first = located.key_pos[(*path, key)]
                    located.problems.append(
                        Diagnostic(
                            file,
                            *_mark(key_node),
                            f"duplicate key {key!r} (first defined at line {first[0]})",
                            "YAML keeps only one of them silently; delete or rename one",
                        )
                    )
                    continue
                written.add(key)
                located.key_pos[(*path, key)] = _mark(key_node)
                out[key] = build(value_node, (*path, key))
            return out
        return [build(item, (*path, i)) for i, item in enumerate(n.value)]

    located.data = build(node, ())
    return located
