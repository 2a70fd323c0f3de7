"""The package's layers, checked: a module imports only from its own layer or lower ones.

Every `import` / `from ... import` anywhere in a file counts (top level, inside functions and classes, under
`if TYPE_CHECKING:`, in try/except), and so does a string constant that is nothing but a module spec
("audiodiff.x.y" or "audiodiff.x.y:function"): the registries resolve those with importlib.
A module's layer is that of its top-level subpackage under audiodiff/; top-level modules (train.py, generate.py, ...)
and web/ are entry points, and so is the `if __name__ == "__main__":` block of a tool that lives in a lower layer
(`python -m audiodiff.data.validate`): imports there are not checked. Hydra and OmegaConf may be imported only by
entry points, models/build.py and training/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "audiodiff"

LAYERS: dict[str, int] = {
    "utils": 0, "audio": 0, "watermark": 0,
    "nn": 1, "conditioning": 1, "diffusion": 1,
    "denoisers": 2, "vocoders": 2, "autoencoders": 2, "adversarial": 2,
    "representations": 3,
    "models": 4, "data": 4,
    "benchmarks": 5,
    "pipeline": 6,
    "evaluation": 7, "guard": 7,
    "training": 8,
    "web": 9,
}
ENTRY = 9  # audiodiff/<name>.py: train, generate, evaluate, export, serve, convert, prepare, config
HYDRA_MODULES = {"hydra", "omegaconf"}
HYDRA_ALLOWED = ("audiodiff.models.build",)  # besides entry points and training/
# Modules whose strings are names of modules, not imports: the table of moved names.
NAME_TABLES = {"audiodiff.utils.moved"}
SPEC = re.compile(r"audiodiff(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of `audiodiff.<top>...`; None for a subpackage missing from LAYERS (a test failure of its own)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the root package holds __version__ only; anyone may import it
    top = parts[1]
    if (PACKAGE / f"{top}.py").is_file():
        return ENTRY
    return LAYERS.get(top)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative ones resolved; plus module-spec string constants."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in _checked_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from audiodiff.x import y` may name a submodule y: count the deeper module when it exists
            for alias in node.names:
                deeper = f"{name}.{alias.name}"
                found.append((node.lineno, deeper if _exists(deeper) else name))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and module not in NAME_TABLES
              and SPEC.fullmatch(node.value.strip())):
            found.append((node.lineno, node.value.strip().split(":")[0]))
    return found


def _is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                        for c in node.test.comparators))


def _checked_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the module except those inside a top-level `if __name__ == "__main__":` block."""
    skipped = {id(n) for top in ast.iter_child_nodes(tree) if _is_main_block(top) for n in ast.walk(top)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:]) if "." in module else Path()
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def all_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_has_a_layer():
    unknown = sorted({module_name(p).split(".")[1] for p in all_files()
                      if module_name(p).count(".") >= 1 and layer_of(module_name(p)) is None})
    assert not unknown, f"subpackages without a layer (add them to LAYERS in {__file__}): {unknown}"


def test_imports_follow_the_layers():
    problems = []
    for path in all_files():
        source = module_name(path)
        own = layer_of(source)
        if own is None:
            continue  # reported by test_every_subpackage_has_a_layer
        for line, target in imports(path):
            if target.split(".")[0] != "audiodiff":
                continue
            if source == "audiodiff":
                if target != "audiodiff._moved":  # the finder of moved names only
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: the root package imports {target}")
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} (L{own}) imports {target} "
                                f"(L{theirs})")
    assert not problems, "imports from a higher layer:\n" + "\n".join(problems)


def test_sibling_packages_do_not_import_each_other_both_ways():
    """Packages of one layer (nn/conditioning/diffusion; denoisers/vocoders/autoencoders/adversarial; models/data) may
    import one another, but the package-level graph must stay acyclic."""
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for path in all_files():
        source = module_name(path)
        if source.count(".") < 1 or layer_of(source) in (None, ENTRY):
            continue
        for line, target in imports(path):
            if target.startswith("audiodiff.") and _top(target) != _top(source) \
                    and layer_of(target) == layer_of(source):
                edges.setdefault(_top(source), set()).add(_top(target))
                where.setdefault((_top(source), _top(target)), f"{path.relative_to(PACKAGE.parent)}:{line}")
    cycles = sorted(f"{a} <-> {b} ({where[(a, b)]}, {where[(b, a)]})"
                    for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, set()))
    assert not cycles, "sibling packages importing each other:\n" + "\n".join(cycles)


def test_hydra_and_omegaconf_only_where_allowed():
    problems = []
    for path in all_files():
        source = module_name(path)
        allowed = layer_of(source) in (8, ENTRY) or source in HYDRA_ALLOWED
        if allowed:
            continue
        for line, target in imports(path):
            if target.split(".")[0] in HYDRA_MODULES:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports {target}")
    assert not problems, ("hydra/omegaconf outside entry points, models/build.py and training/:\n"
                          + "\n".join(problems))
