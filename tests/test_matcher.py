"""The Hungarian matcher is exact: brute force agrees, target order does not matter, and the
per-image cost matrices give the same total cost as the official all-pairs batched formulation."""
import itertools

import pytest
import torch

from torchvision.ops import box_convert, generalized_box_iou

from detrlib.bench.matcher import all_pairs_match, random_problem
from detrlib.matcher import HungarianMatcher, one_thread, pad_targets, pair_costs


def random_boxes(n, generator):
    wh = 0.05 + 0.5 * torch.rand(n, 2, generator=generator)
    cxcy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=generator)
    return torch.cat([cxcy, wh], -1)


def one_image(queries, objects, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(1, queries, num_classes + 1, generator=g),
               "pred_boxes": random_boxes(queries, g)[None]}
    targets = [{"boxes": random_boxes(objects, g), "labels": torch.randint(0, num_classes, (objects,), generator=g)}]
    return outputs, targets


def plain_giou(a, b):
    """GIoU of two cx, cy, w, h boxes in plain Python, independent of torchvision."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def plain_cost(outputs, target, weights=(1, 5, 2)):
    """The DETR matching cost written out pair by pair."""
    prob = outputs["pred_logits"][0].softmax(-1).tolist()
    boxes = outputs["pred_boxes"][0].tolist()
    w_class, w_bbox, w_giou = weights
    return [[-w_class * prob[i][int(label)] + w_bbox * sum(abs(p - q) for p, q in zip(boxes[i], box))
             - w_giou * plain_giou(boxes[i], box)
             for label, box in zip(target["labels"], target["boxes"].tolist())]
            for i in range(len(boxes))]


def brute_force(cost):
    """Least total cost over every injective map from objects to predictions."""
    queries, objects = len(cost), len(cost[0])
    return min(sum(cost[q][t] for t, q in enumerate(perm))
               for perm in itertools.permutations(range(queries), objects))


def total(cost, pairs):
    rows, cols = pairs
    return float(cost[rows, cols].sum())


@pytest.mark.parametrize("queries,objects", [(1, 1), (3, 2), (4, 4), (5, 3), (6, 5), (7, 5), (7, 1)])
@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_over_all_permutations(queries, objects, seed):
    outputs, targets = one_image(queries, objects, seed=seed)
    matcher = HungarianMatcher()
    cost = torch.tensor(plain_cost(outputs, targets[0]), dtype=torch.float64)
    assert torch.allclose(matcher.cost_matrices(outputs, targets)[0].double(), cost, atol=1e-5)
    pairs = matcher(outputs, targets)[0]
    assert len(pairs[0]) == objects and len(set(pairs[0].tolist())) == objects
    assert sorted(pairs[1].tolist()) == list(range(objects))
    assert total(cost, pairs) == pytest.approx(brute_force(cost.tolist()), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_permuting_the_targets_permutes_the_answer(seed):
    outputs, targets = one_image(20, 6, seed=seed)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    shuffled = [{"boxes": targets[0]["boxes"][perm], "labels": targets[0]["labels"][perm]}]
    matcher = HungarianMatcher()
    rows, cols = matcher(outputs, targets)[0]
    rows_s, cols_s = matcher(outputs, shuffled)[0]
    assert torch.equal(rows, rows_s)  # the same predictions are matched ...
    assert torch.equal(cols, perm[cols_s])  # ... to the same objects
    costs = matcher.cost_matrices(outputs, targets)[0], matcher.cost_matrices(outputs, shuffled)[0]
    assert total(costs[0], (rows, cols)) == pytest.approx(total(costs[1], (rows_s, cols_s)), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_same_total_cost_as_the_all_pairs_batched_formulation(seed):
    g = torch.Generator().manual_seed(seed)
    outputs, targets = random_problem(6, 30, 12, g, "cpu")
    matcher = HungarianMatcher(cost_class=2, cost_bbox=3, cost_giou=1)
    ours, base = matcher(outputs, targets), all_pairs_match(matcher, outputs, targets)
    for cost, a, b in zip(matcher.cost_matrices(outputs, targets), ours, base):
        assert total(cost, a) == pytest.approx(total(cost, b), rel=1e-6)


def problems(count, seed=0):
    """Random problems of many shapes: 1..8 images, 1..100 queries, 0..25 objects per image (more
    than the queries now and then), in fp32, fp16 and bf16."""
    g = torch.Generator().manual_seed(seed)
    for k in range(count):
        batch, queries = int(torch.randint(1, 9, (), generator=g)), int(torch.randint(1, 101, (), generator=g))
        outputs, targets = random_problem(batch, queries, 25, g, "cpu")
        for t in targets:  # random_problem gives 1..most objects; let some images have none
            if torch.rand((), generator=g) < 0.1:
                t["boxes"], t["labels"] = t["boxes"][:0], t["labels"][:0]
        dtype = (torch.float32, torch.float16, torch.bfloat16)[k % 3]
        yield {key: v.to(dtype) for key, v in outputs.items()}, targets


def test_same_assignments_as_the_all_pairs_formulation_on_many_problems():
    matcher = HungarianMatcher()
    for outputs, targets in problems(200):
        ours = matcher(outputs, targets)
        with one_thread():  # the all-pairs matrices are large; on a shared test machine one thread is faster
            base = all_pairs_match(matcher, outputs, targets)
        for a, b in zip(ours, base, strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_cost_is_what_the_batched_operations_give_on_every_thread_count():
    """One CPU thread changes the speed on a busy machine, not the numbers: the cost is bit for bit
    the cost the same operations give on torch's threads, written out here as the matcher had it."""
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=3)
    threads = torch.get_num_threads()
    for outputs, targets in problems(30, seed=1):
        labels, tgt_boxes, sizes = pad_targets(targets)
        torch.set_num_threads(2)
        try:
            prob = outputs["pred_logits"].float().softmax(-1)
            boxes, tgt = outputs["pred_boxes"].float(), tgt_boxes.float()
            giou = torch.vmap(generalized_box_iou)(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
            expected = (2 * -prob.gather(-1, labels[:, None, :].expand(-1, prob.shape[1], -1))
                        + 5 * torch.cdist(boxes, tgt, p=1) + 3 * -giou)
            cost = matcher.cost_matrices(outputs, targets)
            assert torch.get_num_threads() == 2  # the caller's setting is restored
        finally:
            torch.set_num_threads(threads)
        for b, n in enumerate(sizes):
            assert torch.equal(cost[b], expected[b, :, :n])


def test_pairs_are_int64_sorted_by_prediction_and_empty_images_work():
    g = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.randn(3, 10, 4, generator=g), "pred_boxes": random_boxes(30, g).view(3, 10, 4)}
    targets = [{"boxes": random_boxes(4, g), "labels": torch.tensor([0, 2, 2, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
               {"boxes": random_boxes(1, g), "labels": torch.tensor([2])}]
    indices = HungarianMatcher()(outputs, targets)
    assert [len(rows) for rows, _ in indices] == [4, 0, 1]
    for rows, cols in indices:
        assert rows.dtype == cols.dtype == torch.int64 and rows.device.type == "cpu"
        assert torch.equal(rows, rows.sort().values)


def test_more_objects_than_queries_matches_every_query():
    outputs, targets = one_image(3, 5)
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert rows.tolist() == [0, 1, 2] and len(set(cols.tolist())) == 3


def test_no_gradient_and_fp32_costs_from_half_precision_outputs():
    outputs, targets = one_image(8, 3)
    half = {k: v.to(torch.bfloat16).requires_grad_() for k, v in outputs.items()}
    matcher = HungarianMatcher()
    cost = matcher.cost_matrices(half, targets)[0]
    assert cost.dtype == torch.float32 and not cost.requires_grad
    upcast = {k: v.detach().float() for k, v in half.items()}
    for a, b in zip(matcher(half, targets)[0], matcher(upcast, targets)[0]):
        assert torch.equal(a, b)


def test_cost_terms_are_what_the_weights_multiply():
    outputs, targets = one_image(6, 3)
    matcher = HungarianMatcher(cost_class=0.5, cost_bbox=0, cost_giou=3)
    terms = pair_costs(outputs["pred_logits"], outputs["pred_boxes"], targets[0]["labels"][None],
                       targets[0]["boxes"][None])
    assert terms["class"].shape == (1, 6, 3)
    assert torch.allclose(matcher.cost_matrices(outputs, targets)[0], 0.5 * terms["class"][0] + 3 * terms["giou"][0])
    per_image = matcher.cost_terms(outputs, targets)[0]
    assert all(torch.equal(per_image[k], terms[k][0]) for k in terms)
    assert (terms["class"] <= 0).all() and (terms["giou"] >= -1).all() and (terms["giou"] <= 1).all()


def test_a_confident_exact_prediction_wins_its_object():
    outputs, targets = one_image(10, 2, num_classes=3)
    outputs["pred_boxes"][0, 7] = targets[0]["boxes"][1]
    outputs["pred_logits"][0, 7] = torch.nn.functional.one_hot(targets[0]["labels"][1], 4) * 20.0
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert cols[rows == 7].tolist() == [1]


def test_bad_targets_raise_clear_errors():
    outputs, targets = one_image(4, 2, num_classes=3)
    matcher = HungarianMatcher()
    with pytest.raises(KeyError, match=r"targets\[0\] has no 'labels'"):
        matcher(outputs, [{"boxes": targets[0]["boxes"]}])
    with pytest.raises(ValueError, match=r"outside \[0, 2\].*no-object \(index 3\)"):
        matcher(outputs, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0, 3])}])
    with pytest.raises(TypeError, match="int64"):
        matcher(outputs, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0, 1], dtype=torch.int32)}])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        matcher(outputs, targets * 2)
    nan_boxes = targets[0]["boxes"].clone()
    nan_boxes[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        matcher(outputs, [{"boxes": nan_boxes, "labels": targets[0]["labels"]}])
    with pytest.raises(ValueError, match="all matching costs are 0"):
        HungarianMatcher(0, 0, 0)


def test_each_image_is_matched_as_if_it_were_alone():
    g = torch.Generator().manual_seed(1)
    outputs, targets = random_problem(5, 12, 9, g, "cpu")  # padded to the largest object count
    together = HungarianMatcher()(outputs, targets)
    for b, (rows, cols) in enumerate(together):
        alone = {k: v[b:b + 1] for k, v in outputs.items()}
        rows_a, cols_a = HungarianMatcher()(alone, targets[b:b + 1])[0]
        assert torch.equal(rows, rows_a) and torch.equal(cols, cols_a)


def test_a_batch_without_any_object():
    outputs, _ = one_image(5, 1)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    (rows, cols), = HungarianMatcher()(outputs, empty)
    assert rows.numel() == cols.numel() == 0 and rows.dtype == torch.int64


@pytest.mark.slow
def test_benchmark_runs_and_finds_identical_assignments(capsys):
    from detrlib.cli import main

    threads = torch.get_num_threads()
    assert main(["bench", "matcher", "--repeats", "1", "--problems", "1", "--threads", "1", "--busy", "1"]) == 0
    table = capsys.readouterr().out
    assert "per-image ms" in table and "all-pairs ms" in table and "next to 1 spinning processes" in table
    rows = [line.split() for line in table.splitlines() if line[:2].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [8, 32, 64, 8] and all("1/1" in r for r in rows)
    assert torch.get_num_threads() == threads  # --threads does not leak into the caller
