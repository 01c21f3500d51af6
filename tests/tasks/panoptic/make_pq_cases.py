"""PQ test cases: perturbed predictions of panopticapi's two COCO sample images, and small hand-made scenes.

``write_cases(root)`` writes every case as COCO panoptic files (ground-truth json + PNG folder, prediction json +
PNG folder) and returns ``{name: (gt_json, pred_json, gt_folder, pred_folder)}``; the same call always writes the
same files. Run as a script with a checkout of cocodataset/panopticapi to (re)write the golden values, the
official ``pq_compute``'s output on every case (see ``tests/data/panoptic_pq_golden/README.md``)::

    PYTHONPATH=$PWD python -m tests.tasks.panoptic.make_pq_cases --panopticapi /tmp/papi \\
        --out tests/data/panoptic_pq_golden/golden.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "panoptic_sample"
SEEDS = (0, 1, 2)


def rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id2rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def load_sample():
    document = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    images = []
    for ann in document["annotations"]:
        ids = rgb2id(np.array(Image.open(SAMPLE / "panoptic_examples" / ann["file_name"])))
        images.append((ann, ids))
    return document, images


# --------------------------------------------------------------------------------------------- perturbations
# Each takes (rng, ids [H, W] int64, segments {id: category}, thing {category: bool}) and returns (ids, segments):
# the predicted map and the category of every id it holds (a new segment gets an id no segment had).

def _new_id(used):
    value = max(used, default=0) + 1
    used.add(value)
    return value


def exact(rng, ids, segments, thing):
    return ids.copy(), dict(segments)


def drop_crowd(rng, ids, segments, thing, crowd=()):
    out = ids.copy()
    out[np.isin(out, list(crowd))] = 0
    return out, dict(segments)


def dropped(rng, ids, segments, thing, fraction=0.3):
    out = ids.copy()
    for sid in segments:
        if rng.random() < fraction:
            out[out == sid] = 0
    return out, dict(segments)


def dropped_into_neighbour(rng, ids, segments, thing):
    """Some segments are absorbed by the segment above them (or VOID)."""
    out = ids.copy()
    for sid in segments:
        if rng.random() < 0.3:
            ys, xs = np.nonzero(out == sid)
            if ys.size:
                neighbour = out[max(ys.min() - 1, 0), xs[0]]
                out[out == sid] = neighbour
    return out, dict(segments)


def merged(rng, ids, segments, thing):
    """Pairs of segments of the same category become one."""
    out = ids.copy()
    by_category = {}
    for sid, category in segments.items():
        by_category.setdefault(category, []).append(sid)
    for members in by_category.values():
        rng.shuffle(members)
        for a, b in zip(members[0::2], members[1::2]):
            if rng.random() < 0.7:
                out[out == b] = a
    return out, dict(segments)


def split(rng, ids, segments, thing):
    """Segments cut in two at a random column (or row) through them."""
    out, cats, used = ids.copy(), dict(segments), set(segments)
    for sid in segments:
        if rng.random() < 0.5:
            ys, xs = np.nonzero(out == sid)
            if ys.size < 2:
                continue
            coord = xs if rng.random() < 0.5 else ys
            cut = np.quantile(coord, rng.uniform(0.2, 0.8))
            part = coord > cut
            new = _new_id(used)
            out[ys[part], xs[part]] = new
            cats[new] = segments[sid]
    return out, cats


def relabelled(rng, ids, segments, thing):
    """Some segments get another category (of either kind)."""
    cats = dict(segments)
    choices = sorted(thing)
    for sid in cats:
        if rng.random() < 0.3:
            cats[sid] = int(rng.choice(choices))
    return ids.copy(), cats


def shifted(rng, ids, segments, thing, dy=0, dx=0):
    out = np.zeros_like(ids)
    h, w = ids.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = ids[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out, dict(segments)


def eroded(rng, ids, segments, thing, steps=1):
    """Boundary pixels of every segment (4-neighbourhood, ``steps`` times) set to VOID."""
    out = ids.copy()
    for _ in range(steps):
        edge = np.zeros(out.shape, bool)
        edge[1:] |= out[1:] != out[:-1]
        edge[:-1] |= out[1:] != out[:-1]
        edge[:, 1:] |= out[:, 1:] != out[:, :-1]
        edge[:, :-1] |= out[:, 1:] != out[:, :-1]
        out[edge] = 0
    return out, dict(segments)


def fp_on_void(rng, ids, segments, thing, gt_ids=None):
    """The ground truth's VOID pixels filled by new segments (rectangles through VOID, random categories)."""
    out, cats, used = ids.copy(), dict(segments), set(segments)
    void = gt_ids == 0
    ys, xs = np.nonzero(void)
    for _ in range(4):
        if not ys.size:
            break
        k = rng.integers(ys.size)
        y0, x0 = ys[k], xs[k]
        box = np.zeros_like(void)
        box[max(y0 - int(rng.integers(3, 40)), 0):y0 + int(rng.integers(3, 40)),
            max(x0 - int(rng.integers(3, 40)), 0):x0 + int(rng.integers(3, 40))] = True
        new = _new_id(used)
        region = box & void if rng.random() < 0.5 else box  # only VOID, or VOID and what it overlaps
        out[region] = new
        cats[new] = int(rng.choice(sorted(thing)))
    return out, cats


def fp_on_crowd(rng, ids, segments, thing, crowd=None):
    """New segments over crowd regions: of the crowd's category (ignored) or of another one (a false positive)."""
    out, cats, used = ids.copy(), dict(segments), set(segments)
    for sid, category in crowd.items():
        ys, xs = np.nonzero(ids == sid)
        for same in (True, False):
            part = rng.random(ys.size) < rng.uniform(0.3, 0.9)
            new = _new_id(used)
            out[ys[part], xs[part]] = new
            cats[new] = category if same else int(rng.choice([c for c in sorted(thing) if c != category]))
    return out, cats


def empty(rng, ids, segments, thing):
    return np.zeros_like(ids), {}


def noisy(rng, ids, segments, thing):
    """Random square blocks copied from elsewhere in the map (ids of other segments, VOID)."""
    out = ids.copy()
    h, w = ids.shape
    for _ in range(60):
        s = int(rng.integers(4, 30))
        y, x, y2, x2 = rng.integers(0, h - s), rng.integers(0, w - s), rng.integers(0, h - s), rng.integers(0, w - s)
        out[y:y + s, x:x + s] = ids[y2:y2 + s, x2:x2 + s]
    return out, dict(segments)


def sample_cases():
    """``{name: perturbation}`` over the sample images (the same perturbation applied to each image)."""
    cases = {"exact": exact, "drop_crowd": drop_crowd, "empty": empty}
    for seed in SEEDS:
        for fn in (dropped, dropped_into_neighbour, merged, split, relabelled, fp_on_void, fp_on_crowd, noisy):
            cases[f"{fn.__name__}_{seed}"] = (fn, seed)
    for dy, dx in ((1, 0), (0, 3), (5, -5), (-12, 8), (25, 0), (0, -40)):
        cases[f"shifted_{dy}_{dx}"] = (lambda rng, i, s, t, dy=dy, dx=dx: shifted(rng, i, s, t, dy, dx), 0)
    for steps in (1, 3, 8):
        cases[f"eroded_{steps}"] = (lambda rng, i, s, t, steps=steps: eroded(rng, i, s, t, steps), 0)
    cases["drop_then_split_then_shift"] = (
        lambda rng, i, s, t: shifted(rng, *split(rng, *dropped(rng, i, s, t), t), t, 3, 2), 7)
    return cases


def _write_png(path: Path, ids: np.ndarray) -> None:
    Image.fromarray(id2rgb(ids)).save(path)


def _segments_info(ids, cats, extra=None):
    """COCO segments_info of the ids present in ``ids`` (plus ``extra`` ids absent from it, for error cases)."""
    info = []
    for sid in sorted(set(np.unique(ids).tolist()) - {0} | set(extra or ())):
        ys, xs = np.nonzero(ids == sid)
        bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1] if ys.size else [0, 0, 0, 0]
        info.append({"id": int(sid), "category_id": int(cats[sid]), "area": int(ys.size), "bbox": bbox, "iscrowd": 0})
    return info


def _write_set(root: Path, name: str, annotations, maps, categories) -> tuple[Path, Path]:
    folder = root / name
    folder.mkdir(parents=True)
    for ann, ids in zip(annotations, maps):
        _write_png(folder / ann["file_name"], ids)
    path = root / f"{name}.json"
    path.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    return path, folder


def write_sample_cases(root: Path) -> dict:
    document, images = load_sample()
    thing = {c["id"]: c["isthing"] == 1 for c in document["categories"]}
    out = {}
    gt_json, gt_folder = _write_set(root, "sample_gt", [a for a, _ in images], [i for _, i in images],
                                    document["categories"])
    for name, case in sample_cases().items():
        fn, seed = case if isinstance(case, tuple) else (case, 0)
        rng = np.random.default_rng(seed)
        annotations, maps = [], []
        for ann, ids in images:
            segments = {s["id"]: s["category_id"] for s in ann["segments_info"]}
            crowd = {s["id"]: s["category_id"] for s in ann["segments_info"] if s["iscrowd"]}
            kwargs = {"crowd": crowd} if fn in (drop_crowd, fp_on_crowd) else {"gt_ids": ids} if fn is fp_on_void else {}
            pred, cats = fn(rng, ids, segments, thing, **kwargs)
            annotations.append({"image_id": ann["image_id"], "file_name": ann["file_name"],
                                "segments_info": _segments_info(pred, cats)})
            maps.append(pred)
        pred_json, pred_folder = _write_set(root / name, "pred", annotations, maps, document["categories"])
        out[f"sample/{name}"] = (gt_json, pred_json, gt_folder, pred_folder)
    return out


# --------------------------------------------------------------------------------------------- hand-made cases
# Categories: 1, 3 things; 7, 9 stuff. 20 x 20 images, drawn with rectangles.
HAND_CATEGORIES = [{"id": 1, "name": "a", "isthing": 1}, {"id": 3, "name": "b", "isthing": 1},
                   {"id": 7, "name": "s", "isthing": 0}, {"id": 9, "name": "t", "isthing": 0}]


def _rects(*rects, base=0, shape=(20, 20)):
    ids = np.full(shape, base, np.int64)
    for sid, (y0, y1, x0, x1) in rects:
        ids[y0:y1, x0:x1] = sid
    return ids


def hand_cases():
    """``{name: (gt ids, gt segments_info, pred ids, pred categories)}``; one image each."""
    cases = {}
    gt_info = [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 6, "category_id": 7, "iscrowd": 0},
               {"id": 8, "category_id": 1, "iscrowd": 1}]
    # 5: rows 0-9 cols 0-9 (100 px); 8: crowd rows 10-19 cols 0-9; 6: stuff right half; VOID: nothing (base 6).
    gt = _rects((5, (0, 10, 0, 10)), (8, (10, 20, 0, 10)), base=6)
    cases["iou_exactly_half"] = (gt, gt_info, _rects((1, (0, 10, 0, 5)), base=2), {1: 1, 2: 7})  # 50/100: not > 0.5
    cases["iou_just_over_half"] = (gt, gt_info, _rects((1, (0, 10, 0, 6)), base=2), {1: 1, 2: 7})
    cases["pred_on_crowd_same_category"] = (gt, gt_info, _rects((1, (10, 20, 0, 10)), (3, (0, 10, 0, 10)), base=2),
                                            {1: 1, 2: 7, 3: 1})
    cases["pred_on_crowd_other_category"] = (gt, gt_info, _rects((1, (10, 20, 0, 10)), (3, (0, 10, 0, 10)), base=2),
                                             {1: 3, 2: 7, 3: 1})
    cases["pred_half_on_crowd"] = (gt, gt_info, _rects((1, (6, 14, 0, 10)), base=2), {1: 1, 2: 7})  # 40/80
    cases["pred_over_half_on_crowd"] = (gt, gt_info, _rects((1, (5, 14, 0, 10)), base=2), {1: 1, 2: 7})
    # VOID in the ground truth: rows 0-9 cols 10-19 are VOID.
    gv = _rects((5, (0, 10, 0, 10)), (0, (0, 10, 10, 20)), (6, (10, 20, 0, 20)))
    gv_info = [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 6, "category_id": 7, "iscrowd": 0}]
    cases["pred_on_void_only"] = (gv, gv_info, _rects((1, (0, 10, 10, 20)), (2, (10, 20, 0, 20)), (3, (0, 10, 0, 10))),
                                  {1: 3, 2: 7, 3: 1})
    cases["pred_half_on_void"] = (gv, gv_info, _rects((1, (0, 10, 5, 15)), (2, (10, 20, 0, 20))), {1: 3, 2: 7})
    cases["pred_void_lowers_union"] = (gv, gv_info, _rects((1, (0, 10, 4, 20)), (2, (10, 20, 0, 20))), {1: 1, 2: 7})
    cases["void_plus_crowd_over_half"] = (
        _rects((5, (0, 10, 0, 10)), (8, (10, 20, 0, 5)), (0, (10, 20, 5, 10)), base=6),
        gt_info, _rects((1, (8, 20, 0, 10)), base=2), {1: 1, 2: 7})
    two_crowds = [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 6, "category_id": 7, "iscrowd": 0},
                  {"id": 8, "category_id": 1, "iscrowd": 1}, {"id": 9, "category_id": 1, "iscrowd": 1}]
    gc = _rects((5, (0, 10, 0, 10)), (8, (10, 20, 0, 5)), (9, (10, 20, 5, 10)), base=6)
    for which, cols in (("first", (0, 5)), ("last", (5, 10))):  # only the last crowd segment of a category counts
        cases[f"two_crowds_pred_on_{which}"] = (gc, two_crowds, _rects((1, (10, 20, *cols)), (3, (0, 10, 0, 10)), base=2),
                                                {1: 1, 2: 7, 3: 1})
    # json area differing from the PNG (panopticapi uses the json's), a json segment absent from the PNG (a miss),
    # a ground-truth category not in the categories (ignored), a PNG id not in the json (ignored).
    odd = [{"id": 5, "category_id": 1, "iscrowd": 0, "area": 60}, {"id": 6, "category_id": 7, "iscrowd": 0},
           {"id": 11, "category_id": 3, "iscrowd": 0, "area": 30}, {"id": 8, "category_id": 42, "iscrowd": 0}]
    go = _rects((5, (0, 10, 0, 10)), (8, (10, 20, 0, 10)), (13, (18, 20, 18, 20)), base=6)
    cases["gt_json_oddities"] = (go, odd, _rects((1, (0, 10, 0, 7)), base=2), {1: 1, 2: 7})
    cases["stuff_only_prediction"] = (gt, gt_info, np.full((20, 20), 4, np.int64), {4: 9})
    cases["things_relabelled_stuff_kept"] = (gt, gt_info, _rects((1, (0, 10, 0, 10)), base=2), {1: 3, 2: 7})
    return cases


def write_hand_cases(root: Path) -> dict:
    out = {}
    for name, (gt_ids, gt_info, pred_ids, cats) in hand_cases().items():
        gt_info = copy.deepcopy(gt_info)
        for s in gt_info:
            s.setdefault("area", int((gt_ids == s["id"]).sum()))
        ann = {"image_id": 1, "file_name": "case.png"}
        gt_json, gt_folder = _write_set(root / "hand" / name, "gt", [{**ann, "segments_info": gt_info}], [gt_ids],
                                        HAND_CATEGORIES)
        pred_json, pred_folder = _write_set(root / "hand" / name, "pred",
                                            [{**ann, "segments_info": _segments_info(pred_ids, cats)}], [pred_ids],
                                            HAND_CATEGORIES)
        out[f"hand/{name}"] = (gt_json, pred_json, gt_folder, pred_folder)
    return out


def write_cases(root) -> dict:
    root = Path(root)
    return {**write_sample_cases(root), **write_hand_cases(root)}


def error_cases(root) -> dict:
    """Cases on which panopticapi raises: ``{name: (gt_json, pred_json, gt_folder, pred_folder)}``."""
    root = Path(root)
    gt = _rects((5, (0, 10, 0, 10)), base=6)
    gt_info = [{"id": 5, "category_id": 1, "iscrowd": 0, "area": 100}, {"id": 6, "category_id": 7, "iscrowd": 0,
                                                                         "area": 300}]
    pred = _rects((1, (0, 10, 0, 10)), base=2)
    variants = {
        "png_id_not_in_json": [s for s in _segments_info(pred, {1: 1, 2: 7}) if s["id"] == 2],
        "json_id_not_in_png": _segments_info(pred, {1: 1, 2: 7, 77: 3}, extra=[77]),
        "unknown_category": _segments_info(pred, {1: 1, 2: 8}),
    }
    out = {}
    ann = {"image_id": 1, "file_name": "case.png"}
    for name, info in variants.items():
        gt_json, gt_folder = _write_set(root / name, "gt", [{**ann, "segments_info": gt_info}], [gt], HAND_CATEGORIES)
        pred_json, pred_folder = _write_set(root / name, "pred", [{**ann, "segments_info": info}], [pred],
                                            HAND_CATEGORIES)
        out[name] = (gt_json, pred_json, gt_folder, pred_folder)
    gt_json, gt_folder = _write_set(root / "missing_image", "gt", [{**ann, "segments_info": gt_info},
                                    {"image_id": 2, "file_name": "other.png", "segments_info": gt_info}],
                                    [gt, gt], HAND_CATEGORIES)
    pred_json, pred_folder = _write_set(root / "missing_image", "pred",
                                        [{**ann, "segments_info": _segments_info(pred, {1: 1, 2: 7})}], [pred],
                                        HAND_CATEGORIES)
    out["missing_image"] = (gt_json, pred_json, gt_folder, pred_folder)
    return out


def fingerprint(paths) -> str:
    """SHA-256 of a case's content (both jsons and the decoded PNG ids), so a change in how the cases are drawn
    (e.g. numpy's random streams) shows as "the cases changed" rather than as a PQ mismatch."""
    gt_json, pred_json, gt_folder, pred_folder = map(Path, paths)
    digest = hashlib.sha256()
    for document, folder in ((gt_json, gt_folder), (pred_json, pred_folder)):
        digest.update(document.read_bytes())
        for ann in json.loads(document.read_text())["annotations"]:
            digest.update(rgb2id(np.array(Image.open(folder / ann["file_name"]))).tobytes())
    return digest.hexdigest()


def _plain(results):
    """panopticapi's results with numpy scalars as Python numbers and ids as strings (JSON)."""
    out = {}
    for key, value in results.items():
        if key == "per_class":
            out[key] = {str(c): {k: float(v) for k, v in d.items()} for c, d in value.items()}
        else:
            out[key] = {k: (int(v) if k == "n" else float(v)) for k, v in value.items()}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panopticapi", required=True, help="a checkout of cocodataset/panopticapi")
    parser.add_argument("--out", required=True, help="the golden json to write")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.panopticapi)
    from panopticapi.evaluation import pq_compute as official  # noqa: E402  (the reference, not a dependency)
    import tempfile
    golden = {"cases": {}, "errors": {}, "fingerprints": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, paths in write_cases(Path(tmp) / "cases").items():
            with contextlib.redirect_stdout(io.StringIO()):
                golden["cases"][name] = _plain(official(*map(str, paths)))
            golden["fingerprints"][name] = fingerprint(paths)
        for name, paths in error_cases(Path(tmp) / "errors").items():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    official(*map(str, paths))
            except Exception as err:  # noqa: BLE001  (recording which error the reference raises)
                golden["errors"][name] = f"{type(err).__name__}: {err}"
            else:
                raise SystemExit(f"panopticapi did not fail on {name}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(golden, sort_keys=True) + "\n")
    print(f"{len(golden['cases'])} cases, {len(golden['errors'])} error cases -> {args.out}")


if __name__ == "__main__":
    main()
