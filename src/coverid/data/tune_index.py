"""An index of the folk tunes in ABC files (music21's bundled corpus or any folder of
<collection>/*.abc) and their variant families, from the ABC text alone (no music21 parse).

A tune's contour is its notes as diatonic steps (letter name and octave; accidentals and
durations ignored), so that the intervals between consecutive notes do not change when a tune
is written in another key. Two tunes are variants of one family when any of these holds, and
families are the connected groups of that relation (union-find):
- incipit: their first `incipit_steps` contour intervals are equal (a shared opening phrase;
  it finds the same tune under other titles, across collections and languages);
- title: the same normalised title (case, punctuation, "the" and dance-type words dropped) and
  equal first `title_incipit_steps` intervals (the check keeps apart different tunes that
  share a name, as German ballads sharing a text do);
- EsAC code: the Essen collection's own variant numbering, N: A0004, A0004A, A0004B, ...
Tunes with an identical whole contour are one tune printed twice (O'Neill's has overlapping
transcriptions): only the first is kept. With params.yaml's settings, music21 10.5.1's Essen,
Ryan's, O'Neill's and Aird's collections hold 12,762 tunes, 427 repeats, and 1,155 families of
2 to 74 variants (3,640 tunes; 168 families span two collections, e.g. Ryan's "Obelisk" and
O'Neill's "The Wily Old Bachelor"); benchmarks/bench_melodies.py counts them again.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from coverid.core.skips import SkipLog

log = logging.getLogger(__name__)

LETTERS = "CDEFGAB"
HEADER_FIELD = re.compile(r"^[A-Za-z]:")
# Text in a tune body that is not a melody note: chord symbols and annotations in quotes,
# decorations, grace notes, inline fields and comments.
NOT_NOTES = re.compile(r'"[^"]*"|![^!]*!|\+[^+\s]*\+|\{[^}]*\}|\[[A-Za-z]:[^\]]*\]|%.*$')
NOTE = re.compile(r"([A-Ga-g])([,']*)")
ESAC_CODE = re.compile(r"^([A-Z]\d{4})[A-Z]?$")
GENERIC_WORDS = frozenset({
    "the", "a", "an", "reel", "jig", "jigg", "hornpipe", "strathspey", "set", "dance", "march",
    "air", "polka", "waltz", "slide", "slip", "double", "single", "no", "or", "song", "clog",
    "quickstep", "fling", "highland", "s", "die", "der", "das"})


@dataclass(frozen=True)
class Tune:
    """One tune of an ABC file: where it is, its titles and its text (header to next X:)."""

    collection: str
    file: str
    number: str
    titles: tuple[str, ...]
    codes: tuple[str, ...]
    text: str
    contour: tuple[int, ...]

    @property
    def title(self) -> str:
        """The first title (or the file and number when the tune has none)."""
        return self.titles[0] if self.titles else f"{self.file} X:{self.number}"

    @property
    def ref(self) -> str:
        """collection/file#X: the tune's name in logs and skip reports."""
        return f"{self.collection}/{self.file}#X:{self.number}"


def corpus_root(corpus_dir: str | None) -> Path:
    """The folder holding the collections: `corpus_dir`, or music21's bundled corpus."""
    if corpus_dir is not None:
        return Path(corpus_dir)
    import music21

    return Path(music21.__file__).parent / "corpus"


def read_tunes(root: Path, collections: list[str], skips: SkipLog) -> list[Tune]:
    """Every tune of root/<collection>/*.abc, in (collection, file, position) order; unreadable
    files and tunes without notes are recorded in `skips`."""
    tunes = []
    for collection in collections:
        files = sorted((root / collection).glob("*.abc"))
        if not files:
            skips.add(root / collection, "no .abc files in this collection folder")
        for path in files:
            try:
                text = _decode(path.read_bytes())
            except OSError as e:
                skips.add(path, f"cannot read ({e.strerror})")
                continue
            tunes += _split_tunes(text, collection, path.name, skips)
    return tunes


def _decode(data: bytes) -> str:
    """UTF-8 text, else Latin-1 (older ABC files)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _split_tunes(text: str, collection: str, file: str, skips: SkipLog) -> list[Tune]:
    """The tunes of one ABC file: each starts at an X: line."""
    starts = [m.start() for m in re.finditer(r"^X:", text, flags=re.M)]
    tunes = []
    for a, b in zip(starts, starts[1:] + [len(text)]):
        tune = _tune(text[a:b], collection, file)
        if len(tune.contour) < 2:
            skips.add(tune.ref, "no melody notes in the ABC text")
        else:
            tunes.append(tune)
    return tunes


def _tune(text: str, collection: str, file: str) -> Tune:
    """One tune's fields and contour from its ABC text."""
    lines = text.splitlines()
    number = lines[0][2:].strip()
    titles, codes, body, in_body = [], [], [], False
    for line in lines[1:]:
        if in_body:
            if not HEADER_FIELD.match(line):
                body.append(line)
        elif line.startswith("T:"):
            titles.append(line[2:].strip())
        elif line.startswith("N:"):
            codes.append(line[2:].strip())
        elif line.startswith("K:"):
            in_body = True
    return Tune(collection, file, number, tuple(t for t in titles if t), tuple(codes), text,
                contour(body))


def contour(body: list[str]) -> tuple[int, ...]:
    """The diatonic step (7 per octave) of every note of an ABC tune body."""
    steps = []
    for line in body:
        for m in NOTE.finditer(NOT_NOTES.sub(" ", line)):
            letter, octave = m.group(1), m.group(2)
            step = LETTERS.index(letter.upper()) + (35 if letter.islower() else 28)
            steps.append(step + 7 * (octave.count("'") - octave.count(",")))
    return tuple(steps)


def intervals(c: tuple[int, ...], n: int) -> tuple[int, ...] | None:
    """The first n intervals of a contour (None when it has fewer)."""
    return tuple(b - a for a, b in zip(c[:n], c[1:n + 1])) if len(c) > n else None


def normalise_title(title: str) -> str:
    """Lower-case ASCII words, bracketed notes, page references and generic words dropped."""
    t = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    t = re.sub(r"\(.*?\)|,\s*s\.\s*\d+", " ", t)
    return " ".join(w for w in re.findall(r"[a-z]+", t) if w not in GENERIC_WORDS)


def dedupe(tunes: list[Tune]) -> tuple[list[Tune], int]:
    """The tunes with every repeat of an identical contour dropped; (kept, number dropped)."""
    seen: set[tuple[int, ...]] = set()
    kept = []
    for t in tunes:
        rel = tuple(s - t.contour[0] for s in t.contour)
        if rel not in seen:
            seen.add(rel)
            kept.append(t)
    return kept, len(tunes) - len(kept)


def families(tunes: list[Tune], incipit_steps: int, title_incipit_steps: int) -> list[list[int]]:
    """Groups of tune indices linked by the variant rules (module docstring), singletons
    included; each group in index order, groups ordered by their first index."""
    parent = list(range(len(tunes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple, int] = {}
    for i, t in enumerate(tunes):
        for key in _keys(t, incipit_steps, title_incipit_steps):
            if key in first:
                a, b = find(first[key]), find(i)
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(tunes)):
        groups[find(i)].append(i)
    return sorted(groups.values())


def _keys(t: Tune, incipit_steps: int, title_incipit_steps: int) -> list[tuple]:
    """The family keys of one tune (rules of the module docstring)."""
    keys: list[tuple] = []
    if (inc := intervals(t.contour, incipit_steps)) is not None:
        keys.append(("incipit", inc))
    if (head := intervals(t.contour, title_incipit_steps)) is not None:
        keys += [("title", name, head) for name in {normalise_title(x) for x in t.titles} if name]
    keys += [("esac", t.collection, t.file, m.group(1))
             for c in t.codes if (m := ESAC_CODE.match(c))]
    return keys
