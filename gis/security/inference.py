"""No leak by inference: what a caller may see, as the analyses need it, and how a result that would depend on
something hidden from the caller is treated.

A result depends on a field or on rows (a corridor's width on a pipe's pressure class, a refusal on whether a
sensor exists). When the caller may not see everything a result depends on, the result is either computed from
what the caller may see (`visible`) or left out (`omit`). The access policy says which, per role, under
`derive:` (layers/access-policy.yml); a dependency not named there is left out. Each dependency the code has is
declared here, with the modes it supports, so the policy is checked against them when the service starts.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gis.errors import ConfigError

Mode = Literal["visible", "omit"]
VISIBLE: Mode = "visible"
OMIT: Mode = "omit"


@dataclass(frozen=True)
class Dependency:
    """A result of some analysis or answer that depends on fields or rows of a layer."""

    id: str  # "<process or answer>/<part>", as the policy names it
    layer: str
    fields: tuple[str, ...]
    description: str
    modes: tuple[Mode, ...] = (OMIT,)  # what the code can do when something it depends on is hidden


@dataclass(frozen=True)
class Sight(Mapping[str, frozenset[str]]):
    """What one caller may see, for analyses: layer id -> the fields (and fid) it may read, for every layer it
    may read; the layers it sees only some rows of; and its role's `derive` modes.

    A Mapping of the readable fields, so code that only needs those reads it as before."""

    fields: Mapping[str, frozenset[str]]
    row_limited: frozenset[str] = frozenset()
    derive: Mapping[str, Mode] = field(default_factory=dict)

    def __getitem__(self, layer_id: str) -> frozenset[str]:
        return self.fields[layer_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def hidden(self, layer_id: str, needed: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
        """The fields of `needed` this caller may not read (all of them when it may not read the layer)."""
        return frozenset(needed) - self.fields.get(layer_id, frozenset())

    def whole(self, layer_id: str, needed: tuple[str, ...] | frozenset[str]) -> bool:
        """Whether the caller sees every row of the layer and every field of `needed`."""
        return layer_id in self.fields and layer_id not in self.row_limited and not self.hidden(layer_id, needed)

    def mode(self, dependency_id: str) -> Mode:
        return self.derive.get(dependency_id, OMIT)


def mode_of(sight: Mapping[str, frozenset[str]] | None, dependency_id: str) -> Mode:
    """The caller's mode for a dependency; `visible` outside a request (sight None sees everything anyway)."""
    if isinstance(sight, Sight):
        return sight.mode(dependency_id)
    return OMIT if sight is not None else VISIBLE


def row_limited(sight: Mapping[str, frozenset[str]] | None, layer_id: str) -> bool:
    return isinstance(sight, Sight) and layer_id in sight.row_limited


def check_declared(derive: Mapping[str, Mapping[str, Mode]], dependencies: Mapping[str, Dependency],
                   where: str = "access policy") -> None:
    """Every `derive` entry of every role names a dependency the code has, in a mode it supports."""
    for role, entries in derive.items():
        for dependency_id, mode in entries.items():
            found = dependencies.get(dependency_id)
            if found is None:
                raise ConfigError(f"{where}: roles.{role}.derive: no dependency '{dependency_id}'; the dependencies "
                                  f"are {', '.join(sorted(dependencies))}")
            if mode not in found.modes:
                raise ConfigError(f"{where}: roles.{role}.derive.{dependency_id}: '{mode}' is not supported; "
                                  f"use {' or '.join(found.modes)}")
