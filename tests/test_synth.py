"""Tests of the query synthesizer (copydetect.synth) on small generated images."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copydetect import synth
from copydetect.synth import EDITS, SynthesisConfig, synthesize

CFG = SynthesisConfig(
    n_references=8, n_copy_queries=6, n_distractors=4, n_training=3, seed=7, max_side=96
)


def _photo(i: int, size: tuple[int, int] = (120, 90)) -> Image.Image:
    """A distinct, textured stand-in for a photograph (noise plus a few colored bars)."""
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    arr[size[1] // 2 :, size[0] // 2 :] //= 2
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sources")
    paths = []
    for i in range(CFG.n_sources_needed + 3):  # a few spare ones stay unused
        path = folder / f"photo_{i:02d}.png"
        _photo(i).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def out_dir(sources: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "synthetic"
    synthesize(sources, out, CFG)
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _pixel_hash(path: Path, max_side: int) -> str:
    img = synth.load_rgb(path, max_side)
    assert img is not None
    return hashlib.sha256(img.tobytes()).hexdigest()


def test_same_inputs_and_seed_give_identical_bytes(
    sources: list[Path], out_dir: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    synthesize(list(reversed(sources)), again, CFG)  # input order must not matter
    assert _tree_bytes(again) == _tree_bytes(out_dir)


def test_other_seed_gives_other_data(sources: list[Path], out_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    synthesize(sources, other, SynthesisConfig(**{**vars(CFG), "seed": 8}))
    assert _tree_bytes(other) != _tree_bytes(out_dir)


def test_counts_and_id_formats(out_dir: Path) -> None:
    refs = sorted(p.name for p in (out_dir / "references").iterdir())
    queries = sorted(p.name for p in (out_dir / "queries").iterdir())
    training = sorted(p.name for p in (out_dir / "training").iterdir())
    assert refs == [f"R{i:06d}.jpg" for i in range(CFG.n_references)]
    assert queries == [f"Q{i:05d}.jpg" for i in range(CFG.n_copy_queries + CFG.n_distractors)]
    assert training == [f"T{i:06d}.jpg" for i in range(CFG.n_training)]
    truth = _read_csv(out_dir / "ground_truth.csv")
    assert [r["query_id"] for r in truth] == [q.removesuffix(".jpg") for q in queries]
    assert sum(1 for r in truth if r["reference_id"]) == CFG.n_copy_queries
    for folder in ("references", "queries", "training"):
        for path in (out_dir / folder).iterdir():
            with Image.open(path) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                assert max(img.size) <= CFG.max_side


def test_ground_truth_points_at_real_references(out_dir: Path) -> None:
    refs = {p.stem for p in (out_dir / "references").iterdir()}
    truth = _read_csv(out_dir / "ground_truth.csv")
    assert {r["reference_id"] for r in truth if r["reference_id"]} <= refs
    with (out_dir / "ground_truth.csv").open() as f:
        assert f.readline() == "query_id,reference_id\n"


def test_roles_use_disjoint_sources(sources: list[Path], out_dir: Path) -> None:
    """Distractor and training sources never appear among the references (by pixels too)."""
    by_name = {p.name: p for p in sources}
    rows = _read_csv(out_dir / "sources.csv")
    role_of = {}
    for row in rows:
        assert row["source"] not in role_of, "a source was used in two roles"
        role_of[row["source"]] = row["role"]
    ref_hashes = {
        _pixel_hash(by_name[s], CFG.max_side) for s, r in role_of.items() if r == "reference"
    }
    others = [s for s, r in role_of.items() if r in ("distractor", "training")]
    assert len(others) == CFG.n_distractors + CFG.n_training
    assert not ref_hashes & {_pixel_hash(by_name[s], CFG.max_side) for s in others}
    distractor_queries = {r["id"] for r in rows if r["role"] == "distractor"}
    truth = {r["query_id"]: r["reference_id"] for r in _read_csv(out_dir / "ground_truth.csv")}
    assert distractor_queries == {q for q, ref in truth.items() if not ref}


def test_overlay_backgrounds_are_never_references(out_dir: Path) -> None:
    refs = {r["source"] for r in _read_csv(out_dir / "sources.csv") if r["role"] == "reference"}
    for row in _read_csv(out_dir / "edits.csv"):
        for edit in json.loads(row["edits"]):
            if edit["op"] == "overlay":
                assert edit["background"] not in refs


def test_edits_csv_is_json_with_bounded_chains(out_dir: Path) -> None:
    rows = _read_csv(out_dir / "edits.csv")
    truth = {r["query_id"]: r["reference_id"] for r in _read_csv(out_dir / "ground_truth.csv")}
    assert len(rows) == len(truth)
    for row in rows:
        chain = json.loads(row["edits"])
        assert row["reference_id"] == truth[row["query_id"]]
        low = CFG.min_edits if row["reference_id"] else 0
        assert low <= len(chain) <= CFG.max_edits
        assert all(edit["op"] in EDITS for edit in chain)
        assert len({edit["op"] for edit in chain}) == len(chain)  # no op twice in one chain


@pytest.mark.parametrize("op", sorted(EDITS))
def test_each_edit_changes_the_image(op: str) -> None:
    img = _photo(99, (64, 48))
    out, params = EDITS[op](img, random.Random(3))
    assert params["op"] == op
    assert out.mode == "RGB"
    json.dumps(params)  # must be loggable in edits.csv
    changed = out.size != img.size or out.tobytes() != img.tobytes()
    assert changed, f"{op} returned the image unchanged"
    assert EDITS[op](img, random.Random(3))[0].tobytes() == out.tobytes()  # deterministic


def test_crop_keeps_30_to_90_percent_of_the_area() -> None:
    img = _photo(5, (100, 80))
    for seed in range(50):
        _, params = synth.edit_crop(img, random.Random(seed))
        assert 0.29 <= params["area"] <= 0.91


def test_overlay_pastes_into_the_background() -> None:
    img, background = _photo(1, (60, 40)), _photo(2, (120, 120))
    out, params = synth.edit_overlay(img, random.Random(0), background)
    x0, y0, x1, y1 = params["box"]
    assert 0 <= x0 < x1 <= out.width and 0 <= y0 < y1 <= out.height
    assert 0.3 <= params["scale"] <= 0.9


def test_not_enough_sources_says_how_many(sources: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"need {CFG.n_sources_needed}.*given 5"):
        synthesize(sources[:5], tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_unreadable_sources_are_skipped_and_counted(
    sources: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = []
    for i in range(10):  # many, so that the seeded deal surely meets some of them
        path = tmp_path / f"broken_{i}.jpg"
        path.write_bytes(b"not an image")
        broken.append(path)
    cfg = SynthesisConfig(n_references=4, n_copy_queries=2, n_distractors=1, max_side=64)
    summary = synthesize([*sources[:5], *broken], tmp_path / "out", cfg)
    assert (summary.n_references, summary.n_distractors) == (4, 1)
    assert summary.n_skipped >= 1
    assert "broken_" in caplog.text
    with pytest.raises(ValueError, match="need 5, given 14 of which 10 are unreadable"):
        synthesize([*sources[:4], *broken], tmp_path / "out2", cfg)


def test_rerun_removes_stale_outputs(sources: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    synthesize(sources, out, CFG)
    smaller = SynthesisConfig(n_references=3, n_copy_queries=2, n_distractors=1, max_side=64)
    synthesize(sources, out, smaller)
    assert len(list((out / "references").iterdir())) == 3
    assert not (out / "training").exists()


def test_cli_writes_the_set(sources: list[Path], tmp_path: Path) -> None:
    argv = ["--sources", str(sources[0].parent), "--out", str(tmp_path / "cli")]
    argv += ["--references", "3", "--queries", "2", "--distractors", "1", "--max-side", "64"]
    assert synth.main(argv) == 0
    assert len(_read_csv(tmp_path / "cli" / "ground_truth.csv")) == 3
    assert (
        synth.main([*argv[:4], "--references", "99", "--queries", "1", "--distractors", "0"]) == 2
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.usefixtures("no_network")
def test_skimage_photos_load_offline() -> None:
    for function in synth.SKIMAGE_PHOTOS.values():
        photo = synth.load_skimage_photo(function)
        assert photo.mode == "RGB" and min(photo.size) >= 256


@pytest.mark.usefixtures("no_network")
def test_skimage_sources_writes_distinct_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two photos keep it fast; the full set (84 tiles) takes about 2 s.
    monkeypatch.setattr(synth, "SKIMAGE_PHOTOS", {"astronaut": "astronaut", "coffee": "coffee"})
    paths = synth.skimage_sources(tmp_path)
    assert len(paths) >= 10
    assert all(p.suffix == ".png" and p.parent == tmp_path for p in paths)
    hashes = {hashlib.sha256(Image.open(p).tobytes()).hexdigest() for p in paths}
    assert len(hashes) == len(paths)
    with Image.open(paths[0]) as tile:
        assert min(tile.size) >= 128


# --- The disc21 edit set ---

NEW_EDITS = (
    "aspect", "blend", "emoji", "jpeg_heavy", "meme", "perspective_strong", "pixelize",
    "screenshot", "shuffle", "skew", "stripes", "text_script", "vflip",
)  # fmt: skip


@pytest.fixture
def no_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without Debian's fonts: an empty font folder, caches emptied around it."""
    monkeypatch.setattr(synth, "FONT_ROOT", tmp_path / "no-fonts")
    synth._installed_fonts.cache_clear()
    yield
    synth._installed_fonts.cache_clear()


def test_default_set_is_the_demo_set_and_disc21_adds_the_new_kinds() -> None:
    old = {"crop", "overlay", "text", "hflip", "rotate", "color", "grayscale", "blur", "jpeg"}
    assert set(synth.EDIT_SETS["default"]) == old | {"pad", "perspective", "shapes"}
    assert set(synth.EDIT_SETS["disc21"]) == set(synth.EDIT_SETS["default"]) | set(NEW_EDITS)
    assert set(synth.EDIT_SETS["disc21"]) == set(EDITS)
    assert SynthesisConfig(n_references=1, n_copy_queries=0, n_distractors=0).edit_set == "default"


def test_unknown_edit_set_and_too_many_edits_are_refused() -> None:
    with pytest.raises(ValueError, match="edit_set must be one of"):
        SynthesisConfig(n_references=1, n_copy_queries=0, n_distractors=0, edit_set="nope")
    with pytest.raises(ValueError, match="max_edits <= 12"):
        SynthesisConfig(n_references=1, n_copy_queries=0, n_distractors=0, max_edits=13)
    SynthesisConfig(n_references=1, n_copy_queries=0, n_distractors=0, max_edits=13,
                    edit_set="disc21")  # fmt: skip


def test_disc21_chains_draw_from_the_new_kinds(sources: list[Path], tmp_path: Path) -> None:
    cfg = SynthesisConfig(**{**vars(CFG), "edit_set": "disc21", "n_copy_queries": 30})
    synthesize(sources, tmp_path / "d", cfg)
    ops = [
        step for row in _read_csv(tmp_path / "d" / "edits.csv") for step in json.loads(row["edits"])
    ]
    assert {s["op"] for s in ops} & set(NEW_EDITS)  # 30+ edits of 25 kinds: some are new
    assert all("background" in s for s in ops if s["op"] in ("blend", "overlay"))
    default_ops = {
        step["op"]
        for row in _read_csv(_out(sources, tmp_path / "o")) for step in json.loads(row["edits"])
    }  # fmt: skip
    assert not default_ops & set(NEW_EDITS)


def _out(sources: list[Path], out: Path) -> Path:
    synthesize(sources, out, SynthesisConfig(**{**vars(CFG), "n_copy_queries": 30}))
    return out / "edits.csv"


def test_pixelize_makes_flat_blocks() -> None:
    img = _photo(3, (96, 96))
    out, params = synth.edit_pixelize(img, random.Random(1))
    arr = np.asarray(out)
    same = (arr[:, 1:] == arr[:, :-1]).all(axis=2).mean()
    assert same > 0.7, f"neighbours equal in {same:.2f} of places at ratio {params['ratio']}"


def test_shuffle_moves_pixels_but_keeps_them() -> None:
    img = _photo(4, (64, 48))
    out, _ = synth.edit_shuffle(img, random.Random(2))
    before, after = np.asarray(img).reshape(-1, 3), np.asarray(out).reshape(-1, 3)
    assert not np.array_equal(before, after)
    assert np.array_equal(np.sort(before, axis=0), np.sort(after, axis=0))


def test_vflip_and_heavy_jpeg() -> None:
    img = _photo(5, (40, 30))
    assert np.array_equal(np.asarray(synth.edit_vflip(img, random.Random(0))[0]),
                          np.asarray(img)[::-1])  # fmt: skip
    for seed in range(20):
        assert 3 <= synth.edit_jpeg_heavy(img, random.Random(seed))[1]["quality"] <= 15


def test_skew_widens_the_canvas_along_its_axis() -> None:
    img = _photo(6, (60, 40))
    for seed in range(10):
        out, params = synth.edit_skew(img, random.Random(seed))
        grown = out.width - img.width if params["axis"] == "x" else out.height - img.height
        assert grown >= round(math.tan(math.radians(10)) * min(img.size)) - 1


def test_screenshot_holds_the_image_unchanged_at_its_box() -> None:
    img = _photo(7, (80, 60))
    for seed in range(5):
        out, params = synth.edit_screenshot(img, random.Random(seed))
        assert np.array_equal(np.asarray(out.crop(tuple(params["box"]))), np.asarray(img))
        assert out.width > img.width


def test_meme_bar_sits_above_the_image() -> None:
    img = _photo(8, (80, 60))
    seed = next(s for s in range(50) if synth.edit_meme(img, random.Random(s))[1]["style"] == "bar")
    out, params = synth.edit_meme(img, random.Random(seed))
    assert out.height == img.height + params["bar"]
    assert np.array_equal(np.asarray(out)[params["bar"] :], np.asarray(img))


def test_blend_mixes_in_the_other_image() -> None:
    img, other = Image.new("RGB", (20, 20), (0, 0, 0)), Image.new("RGB", (30, 10), (200, 200, 200))
    out, params = synth.edit_blend(img, random.Random(0), other)
    assert 0.2 <= params["alpha"] <= 0.55
    assert np.asarray(out).mean() == pytest.approx(200 * params["alpha"], abs=1.5)


def test_text_in_other_scripts_uses_a_covering_font() -> None:
    if synth.find_font(["NotoSansArabic-Regular.ttf", "NotoSansArabic-Bold.ttf"]) is None:
        pytest.skip("fonts-noto-core is not installed")
    scripts = {synth.edit_text_script(_photo(9), random.Random(s))[1]["script"] for s in range(40)}
    assert {"arabic", "latin"} <= scripts


@pytest.mark.usefixtures("no_fonts")
def test_font_edits_fall_back_without_debian_fonts() -> None:
    img = _photo(10)
    for seed in range(10):
        _, params = synth.edit_text_script(img, random.Random(seed))
        assert (params["script"], params["font"]) == ("latin", "pillow-default")
    out, params = synth.edit_emoji(img, random.Random(0))
    assert set(params["glyphs"]) == {"smiley"} and out.tobytes() != img.tobytes()
    for edit in (synth.edit_meme, synth.edit_screenshot):
        assert edit(img, random.Random(0))[0].mode == "RGB"


def test_emoji_come_from_the_color_font() -> None:
    if synth.find_font([synth.EMOJI_FONT]) is None:
        pytest.skip("fonts-noto-color-emoji is not installed")
    out, params = synth.edit_emoji(_photo(11, (200, 200)), random.Random(0))
    assert all(g.startswith("U+") for g in params["glyphs"])


# --- Non-photographic sources of the harder benchmark (benchmarks/graphic_sources.py) ---


@pytest.fixture
def graphic_sources() -> object:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import graphic_sources

    return graphic_sources


def test_text_pages_are_seeded_and_distinct(graphic_sources: object) -> None:
    if synth.find_font(["DejaVuSans.ttf"]) is None:
        pytest.skip("fonts-dejavu-core is not installed")
    first = [(n, d, p.tobytes()) for n, d, p in graphic_sources.text_pages(4, 96)]
    again = [(n, d, p.tobytes()) for n, d, p in graphic_sources.text_pages(4, 96)]
    assert first == again and len({page for _, _, page in first}) == 4


@pytest.mark.usefixtures("no_fonts")
def test_no_text_pages_without_fonts(graphic_sources: object) -> None:
    assert list(graphic_sources.text_pages(3, 96)) == []


def test_icon_aliases_count_once_and_skipped_folders_stay_out(
    graphic_sources: object, tmp_path: Path
) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "mimetypes").mkdir()
    _photo(1).save(tmp_path / "apps" / "a.png")
    (tmp_path / "apps" / "alias.png").symlink_to(tmp_path / "apps" / "a.png")
    _photo(2).save(tmp_path / "mimetypes" / "doc.png")
    found = graphic_sources.unique_files(tmp_path, (".png",), ("/mimetypes/",))
    assert found == [(tmp_path / "apps" / "a.png").resolve()]


def test_a_stamp_shipped_as_svg_and_png_counts_once(
    graphic_sources: object, tmp_path: Path
) -> None:
    import make_benchmark_data as mbd

    _photo(1).save(tmp_path / "star.png")
    (tmp_path / "star.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    _photo(2).save(tmp_path / "moon.png")
    package = mbd.Package("p", "p", tmp_path, graphic=True)
    assert [p.name for p in package.graphics()] == ["moon.png", "star.svg"]


def test_a_content_group_goes_to_one_role(sources: list[Path], tmp_path: Path) -> None:
    """Sources that share content (a wallpaper's tiles) never land in two roles: the group
    takes the role of its first member, later members are held out once that role is full."""
    groups = {p: f"wallpaper{i % 6}" for i, p in enumerate(sources)}  # 6 groups of 3
    cfg = SynthesisConfig(n_references=6, n_copy_queries=2, n_distractors=3, seed=3, max_side=64)
    summary = synthesize(sources, tmp_path / "out", cfg, groups)
    by_name = {p.name: groups[p] for p in sources}
    roles_of_group: dict[str, set[str]] = {}
    for row in _read_csv(tmp_path / "out" / "sources.csv"):
        if row["role"] in ("reference", "distractor"):
            roles_of_group.setdefault(by_name[row["source"]], set()).add(row["role"])
    assert all(len(roles) == 1 for roles in roles_of_group.values()), roles_of_group
    assert (summary.n_references, summary.n_distractors) == (6, 3)
    assert summary.n_held_out > 0
    ungrouped = synthesize(sources, tmp_path / "plain", cfg)
    assert ungrouped.n_held_out == 0


def test_too_few_sources_after_grouping_says_so(sources: list[Path], tmp_path: Path) -> None:
    one_group = {p: "one wallpaper" for p in sources}
    cfg = SynthesisConfig(n_references=3, n_copy_queries=2, n_distractors=2, max_side=64)
    with pytest.raises(ValueError, match=r"held out with their group"):
        synthesize(sources, tmp_path / "out", cfg, one_group)


def test_content_groups_of_the_benchmark_sources(graphic_sources: object) -> None:
    """A wallpaper's tiles share a group; icons of one folder and first word do; text pages
    and unrelated icons do not."""
    import make_benchmark_data as mbd

    wall = mbd.Package("mate-backgrounds", "mate", Path("/w"))
    icons = mbd.Package("tango-icon-theme", "tango", Path("/i"), graphic=True, kind="icon")
    blank = Image.new("RGB", (8, 8))

    def group(package: object, origin: str, box: object = None, name: str = "x") -> str:
        return mbd.content_group(mbd.Candidate(name, Path(origin), box, blank), package)

    assert group(wall, "/w/Elephants.jpg", (0, 0, 9, 9)) == group(
        wall, "/w/Elephants.jpg", (9, 0, 18, 9)
    )
    assert group(wall, "/w/Elephants.jpg", (0, 0, 9, 9)) != group(
        wall, "/w/Storm.jpg", (0, 0, 9, 9)
    )
    save, save_as = (
        group(icons, f"/i/actions/{n}.svg") for n in ("document-save", "document-save-as")
    )
    assert save == save_as
    assert save != group(icons, "/i/actions/edit-redo.svg")
    assert save != group(icons, "/i/apps/document-viewer.svg")
    text = mbd.TEXT_PACKAGE
    assert group(text, "page 1", name="page0001") != group(text, "page 2", name="page0002")
