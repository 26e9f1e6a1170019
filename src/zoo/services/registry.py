"""Registry: named ModelSpecs, as an object an application can scope, copy and extend."""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from zoo.domain.errors import DuplicateModelError, UnknownModelError
from zoo.domain.values import DefaultCfg, FeatureCfg, ModelSpec

if TYPE_CHECKING:
    from torch import nn

FamilyLoader = Callable[[], Iterable[ModelSpec]]
C = TypeVar("C", bound=Callable[..., "nn.Module"])

_NUM_RE = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders resnet18 before resnet101 (numbers compare as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NUM_RE.split(name.lower()) if p)


def split_tag(name: str) -> tuple[str, str]:
    """'resnet50.a1_in1k' -> ('resnet50', 'a1_in1k'); no dot -> (name, '')."""
    base, _, tag = name.partition(".")
    return base, tag


class Registry:
    """Model specs by name. Thread-safe; families can be registered lazily by module."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._specs: dict[str, ModelSpec] = {}
        # name -> family module, for names whose family has not been loaded yet
        self._lazy_names: dict[str, str] = {}
        self._loaders: dict[str, FamilyLoader] = {}

    # -- registration -------------------------------------------------------------------------

    def register(self, spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
        """Add a spec; a taken name raises DuplicateModelError unless replace=True."""
        with self._lock:
            if not replace and (spec.name in self._specs or spec.name in self._lazy_names):
                module = self._specs[spec.name].family if spec.name in self._specs else self._lazy_names[spec.name]
                raise DuplicateModelError(
                    f"model {spec.name!r} is already registered (family {module!r}); pass replace=True to override"
                )
            self._lazy_names.pop(spec.name, None)
            self._specs[spec.name] = spec
        return spec

    def register_model(
        self,
        name: str | None = None,
        *,
        family: str | None = None,
        default_cfgs: Sequence[DefaultCfg] = (),
        feature_cfg: FeatureCfg | None = None,
        replace: bool = False,
        **model_args: object,
    ) -> Callable[[C], C]:
        """Decorator registering a constructor (a class or function returning an nn.Module)."""

        def decorate(fn: C) -> C:
            spec = ModelSpec(
                name=name or getattr(fn, "__name__", "").lower(),
                family=family or getattr(fn, "__module__", "") or "user",
                constructor=fn,
                model_args=model_args,
                default_cfgs=tuple(default_cfgs) or (DefaultCfg(),),
                feature_cfg=feature_cfg or FeatureCfg(),
            )
            self.register(spec, replace=replace)
            return fn

        return decorate

    def register_lazy(self, family: str, names: Iterable[str], loader: FamilyLoader) -> None:
        """Announce a family's names now; `loader` returns their specs on first real use."""
        with self._lock:
            self._loaders[family] = loader
            for n in names:
                if n not in self._specs:
                    self._lazy_names[n] = family

    def _load_family(self, family: str) -> None:
        with self._lock:
            loader = self._loaders.pop(family, None)
            if loader is None:
                return
            for spec in loader():
                if self._lazy_names.get(spec.name) == family:
                    del self._lazy_names[spec.name]
                elif spec.name in self._specs:
                    continue  # replaced by the application before the family loaded: theirs wins
                self._specs[spec.name] = spec
            # names announced but not delivered would otherwise stay listed forever
            for n in [n for n, f in self._lazy_names.items() if f == family]:
                del self._lazy_names[n]

    def _load_all(self, family: str | None = None) -> None:
        with self._lock:
            families = [family] if family is not None else list(self._loaders)
        for f in families:
            self._load_family(f)

    # -- queries ------------------------------------------------------------------------------

    def _all_names(self) -> list[str]:
        with self._lock:
            return [*self._specs, *self._lazy_names]

    def is_model(self, name: str) -> bool:
        """Whether name (optionally name.tag) is registered; a tag must exist too."""
        base, tag = split_tag(name)
        with self._lock:
            known = base in self._specs or base in self._lazy_names
        if not known:
            return False
        return not tag or tag in self.get_spec(base).tags

    def get_spec(self, name: str) -> ModelSpec:
        """The spec of a name (a tag suffix is ignored); UnknownModelError with close matches."""
        base, _ = split_tag(name)
        with self._lock:
            spec = self._specs.get(base)
            family = self._lazy_names.get(base)
        if spec is not None:
            return spec
        if family is not None:
            self._load_family(family)
            with self._lock:
                spec = self._specs.get(base)
            if spec is not None:
                return spec
        raise UnknownModelError(base, self._all_names())

    def resolve(self, name: str) -> tuple[ModelSpec, DefaultCfg]:
        """name or name.tag -> (spec, that tag's cfg); unknown tags raise UnknownModelError."""
        base, tag = split_tag(name)
        spec = self.get_spec(base)
        return spec, spec.get_cfg(tag)

    def list_models(
        self,
        filter: str | Sequence[str] = "",
        *,
        exclude_filters: str | Sequence[str] = (),
        module: str | None = None,
        pretrained: bool = False,
        include_tags: bool = False,
    ) -> list[str]:
        """Names matching fnmatch patterns, naturally sorted; tags expanded as name.tag when asked."""
        includes = [filter] if isinstance(filter, str) else list(filter)
        includes = [p for p in includes if p]
        excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
        need_specs = pretrained or include_tags
        if need_specs:
            self._load_all(self._family_of_module(module) if module else None)
        with self._lock:
            entries = [(n, s.family) for n, s in self._specs.items()] + list(self._lazy_names.items())
        names = [n for n, fam in entries if module is None or _family_matches(fam, module)]
        if need_specs:
            expanded: list[str] = []
            for n in names:
                spec = self.get_spec(n)
                cfgs = [c for c in spec.default_cfgs if c.has_weights or not pretrained]
                if include_tags:
                    expanded.extend(f"{n}.{c.tag}" if c.tag else n for c in cfgs)
                elif cfgs:
                    expanded.append(n)
            names = expanded
        if includes:
            # a pattern without a tag also selects that name's tagged entries
            names = [n for n in names if any(_match(n, p) for p in includes)]
        if excludes:
            names = [n for n in names if not any(_match(n, p) for p in excludes)]
        return sorted(set(names), key=natural_key)

    def _family_of_module(self, module: str) -> str | None:
        with self._lock:
            for fam in self._loaders:
                if _family_matches(fam, module):
                    return fam
        return None

    def list_modules(self) -> list[str]:
        """The short family names that have registered models, sorted."""
        with self._lock:
            fams = {s.family for s in self._specs.values()} | set(self._lazy_names.values())
        return sorted({f.rsplit(".", 1)[-1] for f in fams})

    def list_pretrained(self, filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = ()) -> list[str]:
        """Every name.tag with published weights."""
        return self.list_models(filter, exclude_filters=exclude_filters, pretrained=True, include_tags=True)

    def copy(self) -> Registry:
        """An independent registry with the same entries (lazy families stay lazy)."""
        new = Registry()
        with self._lock:
            new._specs = dict(self._specs)
            new._lazy_names = dict(self._lazy_names)
            new._loaders = dict(self._loaders)
        return new

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_model(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._specs) + len(self._lazy_names)


def _family_matches(family: str, module: str) -> bool:
    return family == module or family.rsplit(".", 1)[-1] == module


def _match(name: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(name, pattern):
        return True
    base, tag = split_tag(name)
    return bool(tag) and "." not in pattern and fnmatch.fnmatchcase(base, pattern)
