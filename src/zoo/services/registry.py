"""Registry: named ModelSpecs, as an object an application can scope, copy and extend."""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar, overload

from zoo.domain.checks import check_bool
from zoo.domain.errors import DuplicateModelError, InvalidValueError, UnknownModelError
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
    """'name.tag' -> ('name', 'tag'), as for 'resnet50.a1_in1k'; no dot -> (name, '')."""
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
        if not isinstance(spec, ModelSpec):
            raise InvalidValueError(f"register(spec={spec!r}) is invalid: expected a ModelSpec")
        check_constructor(spec.constructor)
        with self._lock:
            if not replace and (spec.name in self._specs or spec.name in self._lazy_names):
                module = self._specs[spec.name].family if spec.name in self._specs else self._lazy_names[spec.name]
                raise DuplicateModelError(
                    f"model {spec.name!r} is already registered (family {module!r}); pass replace=True to override"
                )
            self._lazy_names.pop(spec.name, None)
            self._specs[spec.name] = spec
        return spec

    @overload
    def register_model(self, name: C, /) -> C: ...

    @overload
    def register_model(
        self,
        name: str | None = None,
        *,
        family: str | None = None,
        default_cfgs: Sequence[DefaultCfg] = (),
        feature_cfg: FeatureCfg | None = None,
        replace: bool = False,
        **model_args: object,
    ) -> Callable[[C], C]: ...

    def register_model(
        self,
        name: str | C | None = None,
        *,
        family: str | None = None,
        default_cfgs: Sequence[DefaultCfg] = (),
        feature_cfg: FeatureCfg | None = None,
        replace: bool = False,
        **model_args: object,
    ) -> Callable[[C], C] | C:
        """Decorator registering a constructor (an nn.Module subclass, or a function returning an nn.Module).

        Both `@registry.register_model` and `@registry.register_model("name", **model_args)` register
        the constructor (under its own lower-cased name unless one is given) and return it unchanged.
        """

        def decorate(fn: C) -> C:
            check_constructor(fn)
            spec = ModelSpec(
                name=name if isinstance(name, str) else getattr(fn, "__name__", "").lower(),
                family=family or getattr(fn, "__module__", "") or "user",
                constructor=fn,
                model_args=model_args,
                default_cfgs=tuple(default_cfgs) or (DefaultCfg(),),
                feature_cfg=feature_cfg or FeatureCfg(),
            )
            self.register(spec, replace=replace)
            return fn

        if name is not None and not isinstance(name, str):
            if not callable(name):
                raise InvalidValueError(f"register_model name={name!r} is invalid: expected a str, or a constructor")
            return decorate(name)  # the bare form: the constructor itself came as the first argument
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
            loader = self._loaders.get(family)
            if loader is None:
                return
            # the loader is dropped only once it has delivered: one interrupted or failed import
            # (Ctrl-C while torch loads) leaves the family loadable on the next call
            specs = list(loader())
            del self._loaders[family]
            for spec in specs:
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
        base, tag = split_tag(check_name(name))
        with self._lock:
            known = base in self._specs or base in self._lazy_names
        if not known:
            return False
        return not tag or tag in self.get_spec(base).tags

    def get_spec(self, name: str) -> ModelSpec:
        """The spec of a name (a tag suffix is ignored); UnknownModelError with close matches."""
        base, _ = split_tag(check_name(name))
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
        base, tag = split_tag(check_name(name))
        spec = self.get_spec(base)
        return spec, spec.get_cfg(tag)

    def list_models(
        self,
        filter: str | Sequence[str] = "",
        *,
        exclude_filters: str | Sequence[str] = (),
        module: str | Sequence[str] | None = None,
        pretrained: bool = False,
        include_tags: bool | None = None,
    ) -> list[str]:
        """Names matching fnmatch patterns, naturally sorted; tags expanded as name.tag when asked.

        include_tags=None means: with tags when pretrained=True (as timm's listing does).
        module is a family (short or dotted name) or a sequence of them.
        """
        includes = [p for p in patterns("filter", filter) if p]
        excludes = patterns("exclude_filters", exclude_filters)
        modules = None if module is None else patterns("module", module)
        pretrained = check_bool("pretrained", pretrained)
        include_tags = pretrained if include_tags is None else check_bool("include_tags", include_tags)
        need_specs = pretrained or include_tags
        if need_specs:
            if modules is None:
                self._load_all()
            for m in modules or ():
                fam = self._family_of_module(m)
                if fam is not None:
                    self._load_all(fam)
        with self._lock:
            entries = [(n, s.family) for n, s in self._specs.items()] + list(self._lazy_names.items())
        names = [n for n, fam in entries if modules is None or any(_family_matches(fam, m) for m in modules)]
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


def check_name(name: object) -> str:
    """A model name (optionally name.tag) as a str, or InvalidValueError naming what came instead."""
    if not isinstance(name, str):
        raise InvalidValueError(
            f"model name {name!r} is invalid: expected a str, a name or name.tag such as 'resnet50.a1_in1k'"
        )
    return name


def patterns(label: str, value: object) -> list[str]:
    """One fnmatch pattern or a sequence of them, as a list; anything else is InvalidValueError."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, bytes) and all(isinstance(p, str) for p in value):
        return list(value)
    raise InvalidValueError(f"{label}={value!r} is invalid: expected a str pattern or a sequence of str patterns")


def check_constructor(fn: object) -> None:
    """Refuse, at registration, a constructor that is not callable.

    Any nn.Module class, or function returning one, may be registered: the Builder checks that what it
    builds is an nn.Module, and whatever needs more of the model surface (zoo.domain.protocols) checks that
    part where it needs it.
    """
    if not callable(fn):
        raise InvalidValueError(
            f"constructor={fn!r} is invalid: expected an nn.Module subclass or a function returning an nn.Module"
        )
