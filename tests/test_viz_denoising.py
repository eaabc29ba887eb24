"""Chapter 5's pictures: the noised boxes of every denoising group and the attention mask's blocks."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from detrlib.model.denoising import Denoiser  # noqa: E402
from detrlib.viz import plot_attention_mask, plot_denoising  # noqa: E402


def _batch():
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2], [0.25, 0.3, 0.1, 0.2]]), "labels": torch.tensor([1, 2]),
                "size": torch.tensor([60, 80])},
               {"boxes": torch.tensor([[0.6, 0.4, 0.2, 0.2]]), "labels": torch.tensor([0]), "size": torch.tensor([50, 50])}]
    torch.manual_seed(0)
    return targets, Denoiser(3, 16, groups=3, label_noise=1.0)(targets, num_queries=4)


def test_denoising_picture_draws_objects_and_each_groups_noised_boxes():
    targets, dn = _batch()
    ax = plt.subplots()[1]
    plot_denoising(ax, torch.zeros(2, 3, 60, 80)[0], targets[0], dn, 0, ["cat", "dog", "cow"])
    white = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 1.0, 1.0)]
    dashed = [p for p in ax.patches if p not in white]
    assert [tuple(round(v, 4) for v in p.get_xy()) for p in white] == [(24.0, 24.0), (16.0, 12.0)]  # corners in pixels
    assert len(dashed) == int(dn.valid[0].sum()) == 3 * 2
    flipped = [(q, int(dn.labels[0, q])) for q in dn.valid[0].nonzero().flatten().tolist()
               if int(dn.labels[0, q]) != int(targets[0]["labels"][q % dn.pad])]
    assert len(ax.texts) == len(flipped) > 0
    plt.close("all")


def test_mask_picture_shows_the_mask_and_names_its_blocks():
    _, dn = _batch()
    ax = plt.subplots()[1]
    plot_attention_mask(ax, dn.attn_mask[0, 0], dn, 4, "mask")
    assert (ax.images[0].get_array().data == dn.attn_mask[0, 0].int().numpy()).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["DN 0", "DN 1", "DN 2", "matching"]
    plt.close("all")
