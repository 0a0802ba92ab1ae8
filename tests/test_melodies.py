"""The melody corpus: variant families, determinism (seeds, worker processes), metadata,
skipped scores; key and tempo of a version heard in its audio."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from coverid.core.errors import CoveridError
from coverid.core.skips import SkipLog
from coverid.data import arrange, melodies, tune_index
from coverid.features.extract import compute_hpcp

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SR = 22050
REEL = "|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|"
REEL_IN_D = "|:DEFG ABAF|ABAF ABAF|G2BG F2AF|G2E2 E2FE|"   # the same a fourth lower
FIXTURE = {  # collection -> file -> ABC text
    "folk": {
        "book1.abc": f"X:1\nT:The Fixture Reel\nM:4/4\nL:1/8\nK:G\n{REEL}\nGABc dedB|dedB dedB|c2ec B2dB|A2G2 G4:|\n\n"
                     "X:2\nT:Lone Air\nM:3/4\nL:1/4\nK:D\nD F A|d2 c|B A G|F3|E G B|A2 G|F E D|D3|\n",
        "book2.abc": f"X:7\nT:Another Name Entirely\nM:4/4\nL:1/8\nK:D\n{REEL_IN_D}\n"
                     "dedB AFDF|G2B2 A2F2:|\n\n"
                     "X:8\nT:Broken Tune\nM:4/4\nL:1/0\nK:G\nABcd efga|gfed cBAG|\n",
    },
}
TINY = dict(collections=["folk"], n_works=3, versions_per_work=3, n_noise=0, duration_s=3.0,
            sample_rate=SR, max_offset_s=0.5, workers=1)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of ABC collections: a tune in two variants, a single tune, a broken tune."""
    root = tmp_path_factory.mktemp("abc")
    for collection, files in FIXTURE.items():
        (root / collection).mkdir()
        for name, text in files.items():
            (root / collection / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def cfg(corpus_dir: Path) -> dict:
    """params.yaml's data.melodies (so its keys are checked too), on the fixture corpus."""
    return {**yaml.safe_load(PARAMS.read_text())["data"]["melodies"], **TINY,
            "corpus_dir": str(corpus_dir)}


@pytest.fixture(scope="module")
def corpus(cfg: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, SkipLog]:
    """One tiny corpus (seed 7) shared by the read-only tests."""
    out = tmp_path_factory.mktemp("melodies") / "raw"
    skips = SkipLog()
    return out, melodies.generate_melody_corpus(out, cfg, seed=7, skips=skips), skips


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _tunes(corpus_dir: Path) -> list[tune_index.Tune]:
    return tune_index.read_tunes(corpus_dir, ["folk"], SkipLog())


# ------------------------------------------------------------------ families

def test_variant_families_by_incipit_title_and_esac_code():
    def tune(title: str, contour: tuple[int, ...], code: str = "", file: str = "f.abc") -> tune_index.Tune:
        return tune_index.Tune("c", file, "1", (title,), (code,) if code else (), "", contour)

    scale = tuple(range(30, 48))
    tunes = [tune("A", scale), tune("B", tuple(s + 3 for s in scale) + (30,)),  # same incipit
             tune("The Kesh -- Jig", (30, 32, 31, 33, 35, 30, 31, 31)),
             tune("KESH JIG", (40, 42, 41, 43, 45, 41)),                        # title + head
             tune("Kesh", (40, 38, 41, 43, 45)),                                # title, other head
             tune("x", (1, 2), "E0174"), tune("y", (5, 1), "E0174A"),           # EsAC code
             tune("z", (5, 6, 5), "E0174B", file="g.abc")]                        # ... other file
    groups = tune_index.families(tunes, incipit_steps=16, title_incipit_steps=4)
    assert groups == [[0, 1], [2, 3], [4], [5, 6], [7]]
    kept, dropped = tune_index.dedupe(tunes + [tune("again", tuple(s + 7 for s in scale))])  # transposed
    assert (len(kept), dropped) == (len(tunes), 1)


def test_contour_ignores_chord_symbols_decorations_and_grace_notes():
    body = ['"G"G2 !trill!A{c}B | c\'d,e [K:D] % comment with ABC']
    assert tune_index.contour(body) == (32, 33, 34, 42, 29, 37)


# ------------------------------------------------------------------ determinism, layout

def test_same_seed_same_bytes_other_seed_other_audio(cfg, corpus, tmp_path):
    out, meta, _ = corpus
    assert melodies.generate_melody_corpus(tmp_path / "again", cfg, seed=7) == meta
    assert _files(tmp_path / "again") == _files(out)
    melodies.generate_melody_corpus(tmp_path / "other", cfg, seed=8)
    a, b = _files(out), _files(tmp_path / "other")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".wav"))


def test_worker_processes_write_the_same_corpus(cfg, corpus, tmp_path):
    out, meta, _ = corpus
    assert melodies.generate_melody_corpus(tmp_path / "two", {**cfg, "workers": 2}, seed=7) == meta
    assert _files(tmp_path / "two") == _files(out)


def test_metadata_schema_counts_and_files(cfg, corpus):
    out, meta, _ = corpus
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert list(meta) == ["W_1", "W_2"]                      # the broken tune's work is gone
    perf_ids = [p for w in meta for p in meta[w]]
    assert perf_ids == [f"P_{i}" for i in range(1, 7)]
    required = {"work_title", "work_artist", "perf_title", "perf_artist", "release_year", "work_id",
                "perf_id", "instrumental", "noise_song", "collection", "tune", "key_shift",
                "tempo_ratio", "snr_db", "phrase_edit", "offset_s", "programs", "accompaniment"}
    peak = 10 ** (cfg["peak_dbfs"] / 20)
    for w, perfs in meta.items():
        for p, m in perfs.items():
            assert required <= m.keys()
            assert (m["work_id"], m["perf_id"], m["noise_song"]) == (w, p, False)
            assert -5 <= m["key_shift"] <= 6
            assert 1 - cfg["tempo_range"] <= m["tempo_ratio"] <= 1 + cfg["tempo_range"]
            assert cfg["snr_db"][0] <= m["snr_db"] <= cfg["snr_db"][1]
            assert m["programs"]["melody"] in cfg["programs"]
            info = sf.info(out / w / f"{p}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert info.frames == round(cfg["duration_s"] * SR)
            x, _ = sf.read(out / w / f"{p}.wav")
            assert np.max(np.abs(x)) == pytest.approx(peak, abs=1e-3)
    family = next(perfs for perfs in meta.values() if len({m["tune"] for m in perfs.values()}) > 1)
    assert {m["perf_title"] for m in family.values()} == {"The Fixture Reel", "Another Name Entirely"}
    assert all(m["family_size"] == 2 for m in family.values())


def test_broken_score_is_skipped_with_a_one_line_reason(corpus):
    out, _, skips = corpus
    assert [s["path"] for s in skips.skipped] == ["folk/book2.abc#X:8"]
    reason = skips.skipped[0]["reason"]
    assert "music21 cannot parse it" in reason and "\n" not in reason
    assert json.loads((out / "skipped.json").read_text())["files"] == skips.skipped


def test_bad_config_is_one_line_error(cfg, tmp_path):
    with pytest.raises(CoveridError, match="versions_per_work"):
        melodies.generate_melody_corpus(tmp_path / "x", {**cfg, "versions_per_work": 1}, seed=0)
    with pytest.raises(CoveridError, match="invalid programs"):
        melodies.generate_melody_corpus(tmp_path / "x", {**cfg, "programs": [128]}, seed=0)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ key and tempo, heard

@pytest.fixture(scope="module")
def reel(corpus_dir: Path, cfg: dict) -> tuple[arrange.Melody, arrange.Version]:
    """The fixture reel parsed, and a plain version of it (no noise, edit or offset)."""
    melody = arrange.parse_melody(_tunes(corpus_dir)[0])
    v = arrange.make_version(np.random.default_rng(0), [melody], 0, 120.0, cfg)
    return melody, dataclasses.replace(v, key_shift=0, tempo_bpm=120.0, snr_db=None, offset_s=0.0,
                                       phrase_edit=None, accompaniment="block",
                                       bar_order=tuple(range(len(melody.bars) - 1)))


def test_a_transposed_version_has_the_rolled_chroma(reel):
    pcfg = yaml.safe_load(PARAMS.read_text())["preprocess"]["audio"]
    melody, v = reel
    sr = pcfg["sample_rate"]
    chroma = {k: compute_hpcp(arrange.render_version(melody, dataclasses.replace(v, key_shift=k),
                                                      sr, 4.0, -1.0).astype(np.float32), sr, pcfg).mean(0)
              for k in (0, 3)}
    cos = [np.dot(np.roll(chroma[0], r), chroma[3])
           / (np.linalg.norm(chroma[0]) * np.linalg.norm(chroma[3])) for r in range(12)]
    assert int(np.argmax(cos)) == 3 and cos[3] > 0.95


def test_tempo_ratio_is_the_duration_ratio_of_the_chroma(reel):
    pcfg = yaml.safe_load(PARAMS.read_text())["preprocess"]["audio"]
    melody, v = reel
    sr, slow, fast = pcfg["sample_rate"], 100.0, 150.0
    notes, length = arrange.pass_notes(melody, dataclasses.replace(v, tempo_bpm=slow))
    assert length == pytest.approx((melody.bars[-1] - melody.bars[0]) * 60 / slow)
    hpcp = {}
    for tempo, seconds in ((slow, 6.0), (fast, 4.0)):
        version = dataclasses.replace(v, tempo_bpm=tempo, accompaniment=None)
        audio = arrange.render_version(melody, version, sr, seconds, -1.0)
        hpcp[tempo] = compute_hpcp(audio.astype(np.float32), sr, pcfg)
    a, b = hpcp[slow], hpcp[fast]
    ratios = np.round(np.arange(1.2, 1.81, 0.02), 2)
    frames = np.arange(len(a) * 2 // 3)

    def similarity(r: float) -> float:
        x, y = a[frames], b[np.minimum((frames / r).astype(int), len(b) - 1)]
        return float(np.mean(np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
                                                 + 1e-9)))

    best = ratios[int(np.argmax([similarity(r) for r in ratios]))]   # a clear peak at 1.48
    assert best == pytest.approx(fast / slow, abs=0.04)
