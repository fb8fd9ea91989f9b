"""Training images and their captions from a local folder.

Three layouts are read, the ones personalization tools write:

* finexl's ``metadata.json``: a list of ``{"file": ..., "caption": ...}`` (what ``finexl toyworld render`` and
  ``finexl toyworld personalization`` write);
* diffusers' ``imagefolder`` ``metadata.jsonl``: one ``{"file_name": ..., "text": ...}`` per line;
* kohya's sidecar captions: ``NAME.txt`` beside each ``NAME.png``.

With none of them, images are read without captions (enough for DreamBooth, whose prompt is the instance prompt).
Every image must decode, and all must share one size and mode; a problem is reported with the file that has it.
:func:`write_image_folder` writes finexl's layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from finexl.errors import InputError
from finexl.utils import atomic_dir, atomic_write_json, writing
from finexl.validation import SchemaError, validate

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DataError(InputError):
    """A training data folder that cannot be used as it is."""


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 (n, h, w, 3)
    captions: list[str] | None  # one per image, or None when the folder has none
    files: list[str]  # paths relative to the folder, for messages

    def __len__(self) -> int:
        return len(self.images)


def _check(obj, schema: str, source) -> None:
    """``obj`` against a shipped schema (``finexl/schemas``); a mismatch is a :class:`DataError` in one line."""

    try:
        validate(obj, schema, source)
    except SchemaError as err:
        raise DataError(str(err)) from err


def _caption_records(folder: Path) -> list[tuple[str, str | None]] | None:
    """``(relative file, caption)`` from a metadata file, or ``None`` when the folder has no metadata file."""
    if (folder / "metadata.json").is_file():
        source = folder / "metadata.json"
        try:
            records = json.loads(source.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"caption file {source} is not valid JSON: {err}") from err
        if not isinstance(records, list):
            raise DataError(f"caption file {source} must hold a list of {{'file', 'caption'}} records")
        for i, r in enumerate(records):
            if not isinstance(r, dict) or not isinstance(r.get("file"), str) or not isinstance(r.get("caption"), str):
                raise DataError(f"record {i} of {source} needs a string 'file' and a string 'caption'")
        _check(records, "captions", source)
        return [(r["file"], r["caption"]) for r in records]
    if (folder / "metadata.jsonl").is_file():
        source = folder / "metadata.jsonl"
        out = []
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(f"caption file {source} is not UTF-8 text: {err}") from err
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"line {n} of {source} is not valid JSON: {err}") from err
            text = r.get("text", r.get("caption")) if isinstance(r, dict) else None
            if not isinstance(r, dict) or not isinstance(r.get("file_name"), str) or not isinstance(text, str):
                raise DataError(f"line {n} of {source} needs a string 'file_name' and a string 'text'")
            _check(r, "caption_line", f"{source}:{n}")
            out.append((r["file_name"], text))
        return out
    return None


def _read_image(path: Path) -> tuple[np.ndarray, str]:

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            return np.asarray(im.convert("RGB")), mode
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def _read_caption(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise DataError(f"caption file {path} is not UTF-8 text: {err}") from err


def _resize(image: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``resolution`` (what diffusers' training scripts do)."""

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(square.resize((resolution, resolution), Image.BICUBIC))


def load_image_folder(folder: str | Path, resolution: int | None = None, require_captions: bool = True) -> ImageSet:
    """Read the training images (and captions) of ``folder``.

    Args:
        folder: a folder in one of the layouts above.
        resolution: resize (centre crop, bicubic) every image to this square size; ``None`` keeps the size.
        require_captions: raise when the folder has no captions.

    Raises:
        DataError: missing or empty folder, unreadable image, mixed sizes or modes, captions that do not match the
            images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"training data folder {folder} does not exist")
    records = _caption_records(folder)
    if records is not None:
        if not records:
            raise DataError(f"the caption file in {folder} lists no images")
        files = [f for f, _ in records]
        captions: list[str] | None = [c for _, c in records]
        seen: set[str] = set()
        for f in files:
            if f in seen:
                raise DataError(f"image {f} appears twice in the caption file of {folder}")
            seen.add(f)
            if not (folder / f).is_file():
                raise DataError(f"the caption file of {folder} names {f}, which does not exist")
        listed = {(folder / f).resolve() for f in files}
        parents = {p.parent for p in listed}  # other folders (outputs kept beside the data) are not checked
        unlisted = [
            p
            for parent in parents
            for p in parent.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in listed
        ]
        if unlisted:
            raise DataError(
                f"{len(unlisted)} image(s) in {folder} have no caption in its caption file, e.g. "
                f"{unlisted[0].relative_to(folder)}"
            )
    else:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise DataError(f"training data folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files = [str(p.relative_to(folder)) for p in paths]
        sidecars = [p.with_suffix(".txt") for p in paths]
        have = [s.is_file() for s in sidecars]
        if any(have) and not all(have):
            missing = files[have.index(False)]
            raise DataError(f"some images in {folder} have a .txt caption and some do not, e.g. {missing}")
        captions = [_read_caption(s) for s in sidecars] if all(have) else None
    if captions is None and require_captions:
        raise DataError(
            f"no captions in {folder}: add metadata.json, metadata.jsonl or a .txt per image "
            "(or use an instance prompt, as `finexl train dreambooth` does)"
        )
    if captions is not None:
        for f, c in zip(files, captions, strict=True):
            if not c.strip():
                raise DataError(f"empty caption for {f} in {folder}")

    images, first = [], None
    for f in files:
        image, mode = _read_image(folder / f)
        if first is None:
            first = (f, image.shape[:2], mode)
        elif image.shape[:2] != first[1]:
            raise DataError(
                f"images of mixed sizes in {folder}: {f} is {image.shape[1]}x{image.shape[0]} but {first[0]} is "
                f"{first[1][1]}x{first[1][0]}; resize them to one size first"
            )
        elif mode != first[2]:
            raise DataError(f"images of mixed modes in {folder}: {f} is {mode} but {first[0]} is {first[2]}")
        images.append(
            image if resolution is None or image.shape[:2] == (resolution,) * 2 else _resize(image, resolution)
        )
    logger.info("read %d images from %s", len(images), folder)
    return ImageSet(images=np.stack(images), captions=captions, files=files)


def write_image_folder(
    out: str | Path,
    images: np.ndarray,
    captions: list[str],
    extra_records: list[dict] | None = None,
    extra_json: dict[str, object] | None = None,
) -> Path:
    """Write ``out/images/NNNNN.png`` and ``out/metadata.json`` (finexl's layout, read by
    :func:`load_image_folder`), plus ``extra_json`` files; all or nothing: an interruption leaves no folder.

    ``extra_records``: more fields for each image's metadata record (e.g. its exact aspect values).
    """

    if len(images) != len(captions) or (extra_records is not None and len(extra_records) != len(images)):
        raise ValueError(
            f"got {len(images)} images, {len(captions)} captions and "
            f"{len(extra_records or [])} records; need one of each per image"
        )
    with atomic_dir(out) as tmp, writing(out):
        (tmp / "images").mkdir()
        records = []
        for i, image in enumerate(images):
            name = f"images/{i:05d}.png"
            Image.fromarray(image).save(tmp / name)
            records.append({"file": name, "caption": captions[i], **(extra_records[i] if extra_records else {})})
        atomic_write_json(tmp / "metadata.json", records)
        for filename, obj in (extra_json or {}).items():
            atomic_write_json(tmp / filename, obj)
    return Path(out)
