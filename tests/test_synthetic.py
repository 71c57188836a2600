import itertools
import json

import numpy as np
import pytest
from PIL import Image

from focus_modules.synthetic import (
    COLORS,
    FAMILY_DIRS,
    MARK_COLORS,
    QUESTION_FAMILIES,
    SHAPES,
    SceneConfig,
    canvas_size,
    context_crop_box,
    make_scene,
    parse_target,
    shape_mask,
    vstar_record,
    write_vstar_layout,
    xyxy_to_xywh,
)
from focus_modules.synthetic.__main__ import main

SMALL = SceneConfig(canvas_side=(256, 512))
VSTAR_KEYS = {"target_object", "bbox", "question", "options"}


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed, SMALL) for seed in range(12)]


def _inside_box(pixels, box):
    x1, y1, x2, y2 = box
    return pixels[y1:y2, x1:x2]


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = make_scene(7, SMALL), make_scene(7, SMALL)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.objects == b.objects and a.questions == b.questions
    assert np.array_equal(np.asarray(make_scene((7,), SMALL).image), np.asarray(a.image))
    # (7, 0) is the writer's seed of scene 7 of some set; NumPy alone would give it seed 7's stream.
    others = [make_scene(seed, SMALL) for seed in (8, (7, 0), (0, 7), (7, 0, 0), 2**32, (0, 1))]
    assert len({np.asarray(s.image).tobytes() for s in [a, *others]}) == 1 + len(others)
    assert len({s.objects for s in [a, *others]}) == 1 + len(others)


def test_default_canvases_are_large_with_varied_aspect_ratios():
    config = SceneConfig()
    rng = np.random.default_rng(0)
    sizes = [canvas_size(rng, config) for _ in range(300)]
    assert all(1536 <= side <= 2048 for size in sizes for side in size)
    ratios = {round(w / h, 1) for w, h in sizes}
    assert {0.8, 1.0, 1.3} <= ratios
    scene = make_scene(0)
    assert all(1536 <= side <= 2048 for side in scene.size)
    assert all(max(o.box[2] - o.box[0], o.box[3] - o.box[1]) <= 52 for o in scene.objects)


def test_boxes_are_tight_around_the_flat_coloured_pixels(scenes):
    for scene in scenes:
        pixels = np.asarray(scene.image)
        for color, rgb in COLORS.items():
            hit = np.all(pixels == rgb, axis=-1)
            covered = np.zeros_like(hit)
            for obj in (o for o in scene.objects if o.color == color):
                x1, y1, x2, y2 = obj.box
                covered[y1:y2, x1:x2] = True
                ys, xs = np.nonzero(_inside_box(hit, obj.box))
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1), obj
                mark = np.all(_inside_box(pixels, obj.box) == MARK_COLORS[obj.mark], axis=-1)
                filled = _inside_box(hit, obj.box) | mark
                assert filled.mean() > 0.3, obj  # a filled shape, not stray pixels
                assert 20 <= max(x2 - x1, y2 - y1) <= 52, obj
            assert not (hit & ~covered).any(), f"{color} pixels outside the {color} objects' boxes"


def test_every_object_carries_a_small_centred_mark_of_its_mark_colour(scenes):
    for scene in scenes:
        pixels = np.asarray(scene.image)
        for obj in scene.objects:
            inside = _inside_box(pixels, obj.box)
            mark = np.all(inside == MARK_COLORS[obj.mark], axis=-1)
            body = np.all(inside == COLORS[obj.color], axis=-1)
            ys, xs = np.nonzero(mark)
            # every shape's longer side spans >= 0.8 of its nominal square (the square: 0.8)
            nominal = max(inside.shape[:2]) / 0.8
            assert mark.sum() > 0 and (xs.max() - xs.min() + 1) <= SMALL.mark_fraction * nominal + 2, obj
            # centred: the mark's centre lies in the middle half of the box
            cy, cx = ys.mean() / inside.shape[0], xs.mean() / inside.shape[1]
            assert 0.25 < cx < 0.75 and 0.25 < cy < 0.8, obj
            assert body.sum() > 0.5 * mark.sum(), obj  # the object keeps a rim of its colour (a star: its points)


def test_background_is_muted_outside_the_objects(scenes):
    for scene in scenes:
        pixels = np.asarray(scene.image).astype(int)
        background = np.ones(pixels.shape[:2], bool)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            background[y1:y2, x1:x2] = False
        spread = pixels.max(axis=-1) - pixels.min(axis=-1)
        assert spread[background].max() <= 2 * SMALL.max_chroma + 1
        assert pixels[background].std() > 5  # textured, not flat


def test_shape_masks_are_distinct():
    masks = {shape: np.asarray(shape_mask(shape, 32)) > 0 for shape in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.8, (a, b, iou)


def _check_options(question, n):
    assert len(question.options) == n == len(set(question.options))
    assert question.answer == question.options[0]


def test_attribute_questions_ask_for_the_mark_of_a_uniquely_coloured_object(scenes):
    for scene in scenes:
        questions = scene.questions_of("attribute")
        assert len(questions) >= SMALL.n_single  # a counted kind or decoy may be unique too
        for q in questions:
            (name,) = q.target_object
            color, _ = parse_target(name)
            matches = scene.find(name)
            assert len(matches) == 1 and [o.color for o in scene.objects].count(color) == 1
            assert q.question == f"What is the mark color of the {name}?"
            assert q.answer == matches[0].mark and q.boxes == (matches[0].box,)
            _check_options(q, 4)
            assert set(q.options) == set(MARK_COLORS)
            assert q.question_type == 1


def test_spatial_answers_follow_the_box_centres(scenes):
    answers = []
    for scene in scenes:
        questions = scene.questions_of("spatial")
        assert questions
        for q in questions:
            first, second = (scene.find(t) for t in q.target_object)
            assert len(first) == len(second) == 1
            a, b = first[0], second[0]
            assert q.boxes == (a.box, b.box)
            assert q.answer == ("left" if a.center[0] < b.center[0] else "right")
            assert abs(a.center[0] - b.center[0]) >= SMALL.spatial_margin * scene.size[0]
            assert a.box[2] <= b.box[0] or b.box[2] <= a.box[0]
            _check_options(q, 2)
            answers.append(q.answer)
    assert set(answers) == {"left", "right"}


def test_counting_answers_match_the_objects(scenes):
    counts = []
    for scene in scenes:
        (q,) = scene.questions_of("counting")
        (target,) = q.target_object
        color, shape = parse_target(target)
        matches = [o for o in scene.objects if o.color == color and o.shape == shape]
        assert int(q.answer) == len(matches) and sorted(q.boxes) == sorted(o.box for o in matches)
        assert q.box_target == (0,) * len(matches) and q.question_type == 2
        assert q.question == f"How many {target}{'es' if shape == 'cross' else 's'} are there in the image?"
        _check_options(q, 4)
        assert all(o.isdigit() for o in q.options)
        counts.append(len(matches))
    assert min(counts) >= SMALL.count_range[0] and max(counts) <= SMALL.count_range[1]
    assert len(set(counts)) > 1


def test_context_crop_box_contains_the_boxes():
    rng = np.random.default_rng(1)
    for _ in range(200):
        x, y = int(rng.integers(0, 460)), int(rng.integers(0, 300))
        box = (x, y, x + int(rng.integers(1, 40)), y + int(rng.integers(1, 40)))
        crop = context_crop_box([box], (500, 340), rng, context=(1.0, 20.0))
        assert 0 <= crop[0] <= box[0] and 0 <= crop[1] <= box[1]
        assert box[2] <= crop[2] <= 500 and box[3] <= crop[3] <= 340
    with pytest.raises(ValueError):
        context_crop_box([(0, 0, 600, 10)], (500, 340), rng)


def _jpeg_colour_of(image, box):
    """The named colour most pixels in the box are close to (JPEG moves colours slightly)."""
    pixels = _inside_box(np.asarray(image).astype(int), box).reshape(-1, 3)
    names = list(COLORS)
    distances = np.stack([np.abs(pixels - COLORS[n]).sum(-1) for n in names])
    nearest = distances.argmin(0)[distances.min(0) < 90]
    return names[np.bincount(nearest, minlength=len(names)).argmax()]


def test_vstar_layout_round_trip(tmp_path):
    paths = write_vstar_layout(tmp_path, 2, seed=5, config=SMALL, progress=False)
    assert len(paths) == 6
    for family in QUESTION_FAMILIES:
        folder = tmp_path / FAMILY_DIRS[family]
        assert sorted(p.suffix for p in folder.iterdir()) == [".jpg", ".jpg", ".json", ".json"]
    for path in paths:
        record = json.loads(path.read_text())
        assert VSTAR_KEYS <= set(record)
        scene = make_scene(tuple(record["seed"]), SMALL)
        question = scene.questions_of(record["family"])[0]
        assert record == vstar_record(scene, question)
        assert record["options"][0] == question.answer
        assert len(set(record["options"])) == len(record["options"])
        assert record["bbox"] == [xyxy_to_xywh(b) for b in question.boxes]
        assert len(record["bbox"]) == len(record["bbox_target"])
        image = Image.open(path.with_suffix(".jpg"))
        assert image.format == "JPEG" and list(image.size) == record["image_size"] == list(scene.size)
        x, y, w, h = record["bbox"][0]
        color = _jpeg_colour_of(image, (x, y, x + w, y + h))
        assert record["target_object"][0].startswith(color)


def test_module_entry_point_writes_full_size_images(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n", "1", "--seed", "3"])
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/*.json"))]
    assert sorted(r["family"] for r in records) == sorted(QUESTION_FAMILIES)
    assert all(1536 <= side <= 2048 for r in records for side in r["image_size"])
    assert "wrote 3 questions" in capsys.readouterr().out


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_scene(-1, SMALL),
        lambda: make_scene((1, -2), SMALL),
        lambda: SceneConfig(canvas_side=(512, 256)),
        lambda: SceneConfig(aspect_ratios=(3.0,)),
        lambda: SceneConfig(object_size=(16, 600)),
        lambda: SceneConfig(mark_fraction=0.0),
        lambda: parse_target("big circle"),
        lambda: shape_mask("hexagon", 20),
        lambda: make_scene(0, SMALL).crop((0, 0, 10_000, 10)),
        lambda: write_vstar_layout("unused", 1, families=("colour",)),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_canvas_option_keeps_the_default_scenes_and_object_sizes(tmp_path):
    # --canvas 2048 is the default config, so every seed draws the same scene with or without it
    assert SceneConfig.for_canvas(2048) == SceneConfig()
    main(["--out", str(tmp_path / "plain"), "--n", "1", "--seed", "4", "--families", "attribute"])
    main(["--out", str(tmp_path / "canvas"), "--n", "1", "--seed", "4", "--families", "attribute", "--canvas", "2048"])
    written = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.*"))
    assert [p.suffix for p in written] == [".jpg", ".json"]
    for path in written:
        assert (tmp_path / "plain" / path).read_bytes() == (tmp_path / "canvas" / path).read_bytes()
    # larger canvases: sides in [3/4 canvas, canvas], objects of the default pixel size
    large = SceneConfig.for_canvas(3072)
    assert large.canvas_side == (2304, 3072) and large.object_size == SceneConfig().object_size
    scene = make_scene(0, large)
    assert all(2304 <= side <= 3072 for side in scene.size)
    assert all(28 * 0.8 <= max(o.box[2] - o.box[0], o.box[3] - o.box[1]) <= 52 for o in scene.objects)


def test_background_noise_bands_do_not_change_the_pixels():
    # the last step runs a band of rows at a time on one noise stream: any band height (one band
    # for the whole canvas is the unbanded arithmetic) gives the same pixels
    from focus_modules.synthetic.background import render_background

    def draw(rows):
        rng = np.random.default_rng(11)
        return np.asarray(render_background(rng, (301, 203), 2.5, 6.0, 40.0, rows_per_band=rows))

    whole = draw(203)
    for rows in (1, 7, 64, 256):
        assert np.array_equal(draw(rows), whole)


@pytest.mark.parametrize("flags", [["--canvas", "200"], ["--families", "colour"], ["--canvas", "big"]])
def test_module_entry_point_refuses_bad_canvas_and_families(tmp_path, flags):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--n", "1", *flags])
