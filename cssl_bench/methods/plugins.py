"""Methods defined outside the package ("plugins"), used like the built-in ones (docs/adding-a-method.md).

Two ways in, both giving a ``Method`` subclass (``methods.base``: ``loss(views, labels) -> dict`` ...) and a
recipe YAML of the built-in recipes' schema (``config.check_recipe_layers``, checked at every scale on load):

- an **entry point** of an installed distribution in the group ``cssl_bench.methods``
  (``[project.entry-points."cssl_bench.methods"] vicreg = "cssl_bench_vicreg:VICReg"``): the method is
  called by the entry point's name; its version is the distribution's;
- a **method file**, ``--method-file path.py``: a Python file defining one ``Method`` subclass (several: the
  one whose ``name`` attribute is the NAME the command gives); the method is called NAME.

The recipe: ``--recipe path.yaml``, else the class attribute ``recipe``, a path relative to the file that
defines the class. A plugin's name may not be a built-in method's.

Provenance: the plugin reference (``Plugin.ref``) becomes ``Recipe.plugin``, written to the run's
config.yaml and run.json and to every record (``results.store.plugin_provenance``):

- entry point: ``{"kind": "entry_point", "name", "value": "module:Class", "dist", "version", "recipe_file",
  "recipe_sha256", "recipe_option"}``;
- file: ``{"kind": "file", "name", "path" (absolute), "sha256", "class", "recipe_file", "recipe_sha256",
  "recipe_option"}`` (``recipe_option``: the recipe came from ``--recipe``, not the class attribute).

It is not part of the recipe hash (neither is the code version of a built-in method): a run is identified by
its method name and recipe. Reloading a run (probes: ``eval.features.load_run`` -> ``build_method``) re-imports
the code from the reference; a method file whose sha256 changed, or a distribution of another version, is used
with a one-line warning on stderr and recorded as ``plugin_loaded`` beside ``plugin`` in the probe's records; a
method file or entry point that is gone is a one-line error (exit 2).

Errors in a plugin (an import that fails, a class that is not a ``Method`` or has no ``loss``, a bad recipe
key or value) are one line naming the file, exit code 2 (``UserError``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from cssl_bench import UserError
from cssl_bench import config as C
from cssl_bench.methods.base import Method

GROUP = "cssl_bench.methods"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*$")  # usable in run directory names and on the command line


@dataclass
class Plugin:
    """A loaded plugin method: its name, class, provenance reference, and recipe (YAML content and file)."""

    name: str
    cls: type
    ref: dict
    recipe: dict = field(default_factory=dict)
    recipe_file: str | None = None

    @property
    def origin(self) -> str:
        """Where it comes from, for messages and ``cssl-bench methods``."""
        return describe_ref(self.ref)


_LOADED: dict[str, Plugin] = {}  # this process's plugins by name (a method file given on the command line wins)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe_ref(ref: dict) -> str:
    if ref.get("kind") == "file":
        return f"method file {ref.get('path')} (sha256 {str(ref.get('sha256'))[:12]})"
    return f"entry point {ref.get('name')} = {ref.get('value')} of {ref.get('dist')} {ref.get('version')}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _check_name(name: str, where: str) -> None:
    if not NAME_RE.match(name or ""):
        raise UserError(f"{where}: method name {name!r} must be letters, digits and . _ + - (no spaces or slashes)", 2)
    if name in C.builtin_methods() or name == "scales":
        raise UserError(f"{where}: {name!r} is a built-in method's name; give the plugin method another name", 2)


def check_class(cls, where: str) -> type:
    """``cls`` if it honours the method contract (a ``Method`` subclass with its own ``loss``); else one line."""
    if not (inspect.isclass(cls) and issubclass(cls, Method)):
        raise UserError(
            f"{where}: {getattr(cls, '__name__', cls)!r} is not a subclass of cssl_bench.methods.Method "
            f"(the method contract: docs/adding-a-method.md)",
            exit_code=2,
        )
    if cls.loss is Method.loss or not callable(getattr(cls, "loss", None)):
        raise UserError(f"{where}: {cls.__name__} defines no loss(views, labels) -> dict (the optimised 'loss' key)", 2)
    return cls


# --- method files ------------------------------------------------------------------------------------------------
def _import_file(path: Path, sha: str):
    """The module of ``path``, imported once per content (sha256) under a stable name in ``sys.modules`` (dataclasses
    and ``typing.get_type_hints`` look the defining module up there)."""
    mod_name = f"cssl_bench_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{sha[:12]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"method file {path}: not a Python file", exit_code=2)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except UserError as e:
        sys.modules.pop(mod_name, None)
        raise UserError(f"method file {path}: {e}", exit_code=2) from None
    except BaseException as e:  # noqa: BLE001  (a plugin's import may raise anything; SystemExit included)
        sys.modules.pop(mod_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"method file {path}: import failed: {_first_line(e)}", exit_code=2) from None
    return module


def _file_class(module, path: Path, name: str | None, class_name: str | None = None) -> type:
    where = f"method file {path}"
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if cls is None:
            raise UserError(f"{where} no longer defines {class_name}, the class the run was pretrained with", 2)
        return check_class(cls, where)
    mine = [
        c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__ and c is not Method
    ]
    methods = [c for c in mine if issubclass(c, Method)]
    if not methods:
        with_loss = [c for c in mine if callable(getattr(c, "loss", None))]
        if len(with_loss) == 1:  # a method that does not build on the contract: say what it lacks
            check_class(with_loss[0], where)
        raise UserError(f"{where} defines no subclass of cssl_bench.methods.Method", exit_code=2)
    if len(methods) > 1:
        named = [c for c in methods if getattr(c, "name", None) == name]
        if len(named) != 1:
            raise UserError(
                f"{where} defines several methods ({', '.join(c.__name__ for c in methods)}); give the one to use "
                f"the class attribute name = {name!r}",
                exit_code=2,
            )
        methods = named
    return check_class(methods[0], where)


def _read_recipe(path: Path) -> tuple[dict, str]:
    where = str(path)
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist", exit_code=2)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})", 2) from None
    return data if data is not None else {}, sha256_of(path)


def _recipe_of(cls, recipe_file: Path | None, where: str) -> tuple[dict, dict]:
    """(recipe YAML content, its reference keys): ``recipe_file`` (``--recipe``) or the class attribute ``recipe``."""
    given = recipe_file is not None
    if not given:
        attr = getattr(cls, "recipe", None)
        if not isinstance(attr, str) or not attr:
            raise UserError(
                f"{where}: no recipe; pass --recipe FILE.yaml or give {cls.__name__} the class attribute "
                f"recipe = 'FILE.yaml' (a path relative to its module)",
                exit_code=2,
            )
        recipe_file = Path(inspect.getfile(cls)).parent / attr
    recipe_file = Path(recipe_file).resolve()
    data, sha = _read_recipe(recipe_file)
    return data, {"recipe_file": str(recipe_file), "recipe_sha256": sha, "recipe_option": given}


def from_file(name: str, path: Path | str, recipe_file: Path | str | None = None) -> Plugin:
    """The method defined in the Python file ``path``, called ``name``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"method file {path} does not exist", exit_code=2)
    path = path.resolve()
    _check_name(name, f"method file {path}")
    sha = sha256_of(path)
    cls = _file_class(_import_file(path, sha), path, name)
    recipe, rref = _recipe_of(cls, Path(recipe_file) if recipe_file else None, f"method file {path}")
    ref = {"kind": "file", "name": name, "path": str(path), "sha256": sha, "class": cls.__name__, **rref}
    return Plugin(name, cls, ref, recipe, rref["recipe_file"])


# --- entry points ------------------------------------------------------------------------------------------------
def entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of the group ``cssl_bench.methods`` (no plugin code is imported)."""
    return sorted(metadata.entry_points(group=GROUP), key=lambda ep: ep.name)


def _dist(ep: metadata.EntryPoint) -> tuple[str, str]:
    d = getattr(ep, "dist", None)
    if d is None:
        return "?", "?"
    return d.metadata["Name"] or d.name, d.version


def _module_file(module: str) -> str:
    """The file an entry point's module would be imported from, for messages (its name when that is unknown)."""
    try:
        spec = importlib.util.find_spec(module.split(":")[0])
    except Exception:  # noqa: BLE001  (a parent package that fails to import)
        spec = None
    return spec.origin if spec is not None and spec.origin else module


def _load_entry_point(ep: metadata.EntryPoint) -> type:
    dist, version = _dist(ep)
    where = f"plugin method {ep.name} ({ep.value} of {dist} {version}, {_module_file(ep.module)})"
    try:
        cls = ep.load()
    except UserError as e:
        raise UserError(f"{where}: {e}", exit_code=2) from None
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"{where}: import failed: {_first_line(e)}", exit_code=2) from None
    return check_class(cls, where)


def from_entry_point(ep: metadata.EntryPoint, recipe_file: Path | str | None = None) -> Plugin:
    dist, version = _dist(ep)
    where = f"plugin method {ep.name} ({ep.value} of {dist} {version})"
    _check_name(ep.name, where)
    cls = _load_entry_point(ep)
    recipe, rref = _recipe_of(cls, Path(recipe_file) if recipe_file else None, f"{where}, {inspect.getfile(cls)}")
    ref = {"kind": "entry_point", "name": ep.name, "value": ep.value, "dist": dist, "version": version, **rref}
    return Plugin(ep.name, cls, ref, recipe, rref["recipe_file"])


def find_entry_point(name: str) -> metadata.EntryPoint | None:
    found = [ep for ep in entry_points() if ep.name == name]
    if len(found) > 1:
        dists = ", ".join(f"{d} {v}" for d, v in map(_dist, found))
        raise UserError(f"plugin method {name} is provided by several installed distributions ({dists})", 2)
    return found[0] if found else None


# --- registering and resolving -------------------------------------------------------------------------------------
def register(plugin: Plugin) -> Plugin:
    """Make ``plugin`` usable by name in this process: its recipe for ``config.load_recipe`` (checked at every
    scale), its class for ``build_method``."""
    C.register_plugin_recipe(plugin.name, plugin.recipe, plugin.recipe_file or plugin.origin, plugin.ref)
    _LOADED[plugin.name] = plugin
    return plugin


def use_method(
    name: str, method_file: Path | str | None = None, recipe_file: Path | str | None = None
) -> Plugin | None:
    """Prepare method ``name`` for this command: a built-in method (None returned), the method of ``method_file``,
    or an installed entry point; the plugin is registered (``register``). An unknown name: the one-line error
    naming the choices."""
    if method_file is not None:
        return register(from_file(name, method_file, recipe_file))
    if name in C.builtin_methods():
        if recipe_file is not None:
            raise UserError(
                f"--recipe gives a plugin method its recipe; {name} is built-in (its recipe is "
                f"cssl_bench/recipes/{name}.yaml: change it with --set section.key=value)",
                exit_code=2,
            )
        return None
    if name in _LOADED and recipe_file is None:
        return _LOADED[name]
    ep = find_entry_point(name)
    if ep is None:
        known = C.builtin_methods() + [e.name for e in entry_points()]
        raise UserError(
            f"unknown method {name!r}; choose from {', '.join(sorted(set(known)))} "
            f"(or a method of your own: --method-file FILE.py --recipe FILE.yaml)",
            exit_code=2,
        )
    return register(from_entry_point(ep, recipe_file))


def changed(saved: dict, current: dict) -> str | None:
    """What differs between the code a run was pretrained with (``saved``) and ``current``, or None."""
    if saved.get("kind") != current.get("kind"):
        return f"the run used {describe_ref(saved)}, now {describe_ref(current)}"
    if saved.get("kind") == "file" and saved.get("sha256") != current.get("sha256"):
        return (
            f"method file {current.get('path')} changed since the run was pretrained "
            f"(sha256 {str(saved.get('sha256'))[:12]} -> {str(current.get('sha256'))[:12]})"
        )
    if saved.get("kind") == "entry_point" and (saved.get("version"), saved.get("value")) != (
        current.get("version"),
        current.get("value"),
    ):
        return (
            f"plugin method {saved.get('name')} was {saved.get('value')} of {saved.get('dist')} {saved.get('version')} "
            f"when the run was pretrained, now {current.get('value')} of {current.get('dist')} {current.get('version')}"
        )
    return None


def warn(message: str) -> None:
    print(f"warning: {message}; using it as it is now (records note it as plugin_loaded)", file=sys.stderr)


def load_ref(name: str, ref: dict) -> Plugin:
    """The plugin a saved run (``Recipe.plugin`` = ``ref``) names, re-imported; the recipe is not re-read (the run's
    config.yaml holds it merged). Gone: a one-line error; changed: ``Plugin.ref`` is the current reference."""
    if ref.get("kind") == "file":
        path = Path(str(ref.get("path")))
        if not path.is_file():
            raise UserError(
                f"the run's method {name} was defined in {path} (sha256 {str(ref.get('sha256'))[:12]}), which no "
                f"longer exists; put the file back there to reload the run",
                exit_code=2,
            )
        sha = sha256_of(path)
        cls = _file_class(_import_file(path, sha), path, name, ref.get("class"))
        current = {**ref, "sha256": sha}
    else:
        ep = find_entry_point(str(ref.get("name")))
        if ep is None:
            raise UserError(
                f"the run's method {name} came from the entry point {ref.get('value')} of {ref.get('dist')} "
                f"{ref.get('version')}, which is not installed (pip install it to reload the run)",
                exit_code=2,
            )
        cls = _load_entry_point(ep)
        dist, version = _dist(ep)
        current = {**ref, "value": ep.value, "dist": dist, "version": version}
    return Plugin(name, cls, current)


def plugin_class(recipe) -> tuple[type, dict | None]:
    """(class, the current reference where it differs from the recipe's) of a plugin recipe (``Recipe.plugin``):
    the plugin registered in this process when it is the same code, else re-imported (``load_ref``) with a
    warning where the code changed since the run was pretrained."""
    ref = recipe.plugin
    p = _LOADED.get(recipe.method)
    if p is None or changed(ref, p.ref) is not None:
        p = load_ref(recipe.method, ref)
    why = changed(ref, p.ref)
    if why is not None:
        warn(why)
        return p.cls, p.ref
    return p.cls, None


def listing() -> list[tuple[str, str, str, str]]:
    """(name, description, paper, source) of every installed entry-point plugin and of those registered in this
    process; an entry point that cannot be loaded is listed with its one-line error as the description."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    for ep in entry_points():
        try:
            p = _LOADED.get(ep.name) or from_entry_point(ep)
            rows[ep.name] = _row(p)
        except UserError as e:
            dist, version = _dist(ep)
            rows[ep.name] = (ep.name, f"cannot be loaded: {e}", "", f"entry point of {dist} {version}")
    for name, p in _LOADED.items():
        rows[name] = _row(p)
    return [rows[k] for k in sorted(rows)]


def _row(p: Plugin) -> tuple[str, str, str, str]:
    desc = p.recipe.get("description") or getattr(p.cls, "description", "") or ""
    paper = p.recipe.get("paper") or getattr(p.cls, "paper", "") or ""
    if p.ref["kind"] == "file":
        source = f"file {p.ref['path']} (sha256 {p.ref['sha256'][:12]})"
    else:
        source = f"entry point of {p.ref['dist']} {p.ref['version']}"
    return p.name, desc, paper, source
