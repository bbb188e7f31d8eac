"""GuardConfig: what to corrupt, where and how hard; saved as readable, checksummed JSON (never pickle)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from eco_guard.corruption import CORRUPTIONS, USES_TARGET, CorruptionParams, check_corruption
from eco_guard.io import GuardFileError, read_document, write_document

CONFIG_NAME = "guard_config.json"
FORMAT_VERSION = 1
SCOPES = ("prompt", "spans", "image")
SURROGATE_FIELDS = ("surrogate_given_names", "surrogate_surnames")


@dataclass
class GuardConfig:
    """How the guard corrupts a flagged request.

    Scopes (any combination): ``prompt``: every prompt token but the last (ECO's default); ``spans``: the tokens of
    the forget-target names the classifier found; ``image``: the projected image features of a LLaVA-family model.

    A flagged request in which scope ``spans`` finds no name (the text head fired on a description, or the name is
    not in the prompt as written) gets ``fallback_corruption`` at ``fallback_strength`` over all its prompt tokens
    but the last, and a warning is logged: a name-reading corruption such as ``substitute`` would otherwise turn
    every word of the prompt into a surrogate name, and the model answers nothing.
    """

    corruption: str = field(
        default="noise_first_n", metadata={"help": "corruption family (see eco_guard.corruption)"}
    )
    strength: float = field(
        default=100.0, metadata={"help": "noise sigma or constant; ignored by zero/flip/permute"}
    )
    image_strength: float | None = field(
        default=None,
        metadata={
            "help": "strength on image features (scope image); None: the same as strength. Names are a few "
            "tokens and an image is hundreds of features, so each modality may need its own"
        },
    )
    image_corruption: str | None = field(
        default=None,
        metadata={
            "help": "corruption family on image features (scope image); None: the same as corruption. "
            "'substitute' moves them toward a surrogate face's features (EcoGuard's image_surrogates)"
        },
    )
    dims: int = field(
        default=1, metadata={"help": "n (first/random n dimensions) or k (top-k magnitude dimensions)"}
    )
    scope: tuple[str, ...] = field(default=("prompt",), metadata={"help": f"token scope, any of {SCOPES}"})
    seed: int = field(default=0, metadata={"help": "seed of the corruption's randomness"})
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "flag when the classifier's score >= this; None keeps the classifier's calibrated decision"
        },
    )
    fallback_corruption: str = field(
        default="noise_first_n",
        metadata={
            "help": "corruption of the whole prompt of a flagged request where scope spans finds no name; it "
            "must not read a target (a surrogate name needs a name to replace)"
        },
    )
    fallback_strength: float = field(
        default=100.0, metadata={"help": "strength of fallback_corruption (n/k: dims)"}
    )
    surrogate_given_names: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "corruption 'substitute': the given names a forget target's name is read as (tried first for "
            "every word); empty: eco_guard.surrogates.GIVEN_NAMES. Names typical of the people the model serves "
            "make the guarded answers those about a typical unknown person"
        },
    )
    surrogate_surnames: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "corruption 'substitute': the surnames for words no given name of the same token count fits; "
            "empty: eco_guard.surrogates.SURNAMES"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.scope, str):
            self.scope = (self.scope,)
        self.scope = tuple(self.scope)
        for name in SURROGATE_FIELDS:
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        check_corruption(self.corruption)
        if self.image_corruption is not None:
            check_corruption(self.image_corruption, "image_corruption")
        if self.fallback_corruption not in CORRUPTIONS or USES_TARGET[self.fallback_corruption]:
            valid = sorted(name for name in CORRUPTIONS if not USES_TARGET[name])
            raise ValueError(
                f"fallback_corruption {self.fallback_corruption!r} must be a corruption that reads no target; "
                f"valid names: {', '.join(valid)}"
            )
        for name in ("strength", "image_strength", "fallback_strength"):
            value, optional = getattr(self, name), name == "image_strength"
            if value is None and optional:
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                kind = "None or a finite number >= 0" if optional else "a finite number >= 0"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        if isinstance(self.dims, bool) or not isinstance(self.dims, int) or self.dims < 1:
            raise ValueError(f"dims must be an integer >= 1, got {self.dims!r}")
        if not self.scope or any(s not in SCOPES for s in self.scope):
            raise ValueError(f"scope must be a non-empty combination of {SCOPES}, got {self.scope!r}")
        if USES_TARGET[self.corruption] and "prompt" in self.scope:
            raise ValueError(
                f"corruption {self.corruption!r} reads each word as a surrogate name: scope 'prompt' would turn "
                "every word of a flagged prompt into a name; use scope 'spans' (the names the classifier finds)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float))
            and not isinstance(self.threshold, bool)
            and 0 <= self.threshold <= 1
        ):
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")
        for name in SURROGATE_FIELDS:
            bad = [
                w for w in getattr(self, name) if not (isinstance(w, str) and w.isalpha() and w[0].isupper())
            ]
            if bad:
                raise ValueError(f"{name} must be capitalized words of letters only, got {bad[:3]!r}")
        shared = sorted(set(self.surrogate_given_names) & set(self.surrogate_surnames))
        if shared:
            raise ValueError(f"{shared[:3]!r} are both surrogate_given_names and surrogate_surnames")

    @property
    def params(self) -> CorruptionParams:
        """The corruption of prompt tokens."""
        return CorruptionParams(strength=float(self.strength), dims=int(self.dims))

    @property
    def fallback_params(self) -> CorruptionParams:
        """The corruption of a flagged prompt whose names scope ``spans`` cannot find."""
        return CorruptionParams(strength=float(self.fallback_strength), dims=int(self.dims))

    @property
    def image_corruption_name(self) -> str:
        """The corruption family applied to image features."""
        return self.image_corruption or self.corruption

    @property
    def image_params(self) -> CorruptionParams:
        """The corruption of image features (``image_strength``, else ``strength``)."""
        strength = self.strength if self.image_strength is None else self.image_strength
        return CorruptionParams(strength=float(strength), dims=int(self.dims))

    def replace(self, **changes: Any) -> GuardConfig:
        """A validated copy with some fields changed."""
        return GuardConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scope"] = list(self.scope)
        for name in SURROGATE_FIELDS:
            data[name] = list(getattr(self, name))
        return data

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``guard_config.json`` (sorted keys, format version, sha256 of the content) into ``directory``."""
        return write_document(Path(directory) / CONFIG_NAME, self.to_dict(), version=FORMAT_VERSION)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, verify: bool = True) -> GuardConfig:
        """Read a saved config. ``verify=False`` accepts a hand-edited file (it is still validated field by field)."""
        path = Path(directory)
        path = path / CONFIG_NAME if path.is_dir() else path
        try:
            body = read_document(path, version=FORMAT_VERSION, what="guard config", verify=verify)["config"]
        except GuardFileError as err:
            hint = "; load it with verify=False if the edit was intended" if "modified" in str(err) else ""
            raise GuardFileError(f"{err}{hint}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise GuardFileError(f"{path} has unknown config fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**body)
        except (TypeError, ValueError) as err:
            raise GuardFileError(f"{path}: invalid config: {err}") from None
