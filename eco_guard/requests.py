"""Requests and flags: the small vocabulary shared by the guard, its backends and any prompt classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Request:
    """One prompt. Either ``messages`` (a chat) or ``text`` (a plain prompt), and optionally one image.

    ``image`` is a ``PIL.Image.Image`` or a path. :func:`to_request` decodes it once, to RGB, so that the classifier
    and the encoder read the same pixels without opening the file twice.
    """

    messages: tuple[Mapping[str, str], ...] = ()
    text: str | None = None
    image: Any = None

    @property
    def classifier_text(self) -> str:
        """What a text classifier reads: the system prompt and every user turn (a target named in an earlier turn
        and then called "she" is still in view), or the plain text."""
        if self.text is not None:
            return self.text
        return "\n".join(m["content"] for m in self.messages if m["role"] in ("system", "user"))

    def load_image(self) -> Any:
        """The image as an RGB ``PIL.Image`` (None when there is none); a clear error when it cannot be read."""
        if self.image is None:
            return None
        from PIL import Image, UnidentifiedImageError

        if isinstance(self.image, Image.Image):
            return self.image if self.image.mode == "RGB" else self.image.convert("RGB")
        if not isinstance(self.image, (str, PathLike)):
            raise TypeError(f"an image must be a file path or a PIL image, got {type(self.image).__name__}")
        path = Path(self.image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image {path} cannot be read: {err}") from None


@dataclass(frozen=True)
class Flag:
    """A classifier's verdict on one request.

    ``terms`` are the forget-target names exactly as they stand in the request (e.g. ``"Jane Doe's"``); the guard
    finds them in the prompt the model receives and corrupts their tokens when the scope asks for spans.
    """

    flagged: bool
    score: float = 0.0
    source: str = ""
    terms: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class PromptClassifier(Protocol):
    """What the guard needs from a classifier: one Flag per request, in order."""

    def flag(self, requests: Sequence[Request]) -> list[Flag]: ...


@runtime_checkable
class NameFinder(Protocol):
    """What a classifier may add: the forget-target names in each request, without deciding a flag. The guard asks
    for them when a caller flags a request itself (``flags=[True]``), so that scope ``spans`` corrupts the very
    tokens it would corrupt had the classifier flagged the request."""

    def names(self, requests: Sequence[Request]) -> list[tuple[str, ...]]: ...


PromptLike = str | Sequence[Mapping[str, Any]] | Mapping[str, Any] | Request


class RequestError(ValueError):
    """One request cannot be served; the message names the problem."""


def normalize(
    prompts: Sequence[PromptLike], *, images: bool = True, collect: bool = False
) -> list[Request | RequestError]:
    """Every prompt as a Request, its image decoded once: the one check of a call's prompts, for every front end.

    ``images=False`` (a text-only model) refuses a prompt with an image. A bad prompt raises ValueError or
    TypeError naming it (``prompt 3: ...``), or with ``collect`` stands in the list as its RequestError, so
    that a serving call answers the others."""
    if isinstance(prompts, (str, Request, Mapping)):
        raise TypeError("prompts must be a list; wrap a single prompt in [ ]")
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    out: list[Request | RequestError] = []
    for i, prompt in enumerate(prompts):
        try:
            request = to_request(prompt, decode_image=images)
            if request.image is not None and not images:
                raise ValueError("the prompt has an image but the model is a text-only model")
        except (ValueError, TypeError, OSError) as err:
            if not collect:
                raise type(err)(f"prompt {i}: {err}") from None
            request = RequestError(str(err))
        out.append(request)
    return out


def to_request(prompt: PromptLike, *, decode_image: bool = True) -> Request:
    """Normalize a string, a chat message list, a ``{"text"|"messages", "image"}`` dict or a Request; its image
    is decoded to RGB unless ``decode_image`` is False (a clear error when it cannot be read)."""
    if isinstance(prompt, Request):
        request = prompt
    elif isinstance(prompt, str):
        request = Request(text=prompt)
    elif isinstance(prompt, Mapping):
        unknown = set(prompt) - {"text", "messages", "image", "flag"}
        if unknown:
            raise ValueError(
                f"unknown prompt keys {sorted(unknown)}; use 'text' or 'messages', optionally 'image'"
            )
        if ("text" in prompt) == ("messages" in prompt):
            raise ValueError("a prompt dict needs exactly one of 'text' or 'messages'")
        if "text" in prompt:
            if not isinstance(prompt["text"], str):
                raise TypeError(f"prompt 'text' must be a string, got {type(prompt['text']).__name__}")
            request = Request(text=prompt["text"], image=prompt.get("image"))
        else:
            request = Request(messages=_messages(prompt["messages"]), image=prompt.get("image"))
    elif isinstance(prompt, Sequence):
        request = Request(messages=_messages(prompt))
    else:
        raise TypeError(
            f"a prompt must be a string, a list of chat messages or a dict, got {type(prompt).__name__}"
        )
    if not request.classifier_text.strip():
        raise ValueError("empty prompt: the request has no system or user text")
    if request.image is not None and decode_image:
        image = request.load_image()
        if image is not request.image:
            request = Request(request.messages, request.text, image)
    return request


def _messages(messages: Any) -> tuple[dict[str, str], ...]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("'messages' must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise ValueError(f"message {i} has role {message['role']!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise TypeError(f"message {i} content must be a string, got {type(message['content']).__name__}")
        out.append({"role": message["role"], "content": message["content"]})
    return tuple(out)
