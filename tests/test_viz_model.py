"""The model pictures of chapter 2 draw what they are given."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from detrlib.viz import (plot_decoder_attention, plot_encoder_attention, plot_position_encoding,  # noqa: E402
                         plot_predictions)


def test_predictions_draw_one_box_and_label_per_detection():
    image = torch.zeros(3, 64, 96)
    result = {"boxes": torch.tensor([[4.0, 8.0, 40.0, 30.0], [50.0, 10.0, 90.0, 60.0]]),
              "labels": torch.tensor([1, 0]), "scores": torch.tensor([0.9, 0.4])}
    ax = plot_predictions(image, result, class_names=["cat", "dog"])
    assert [p.get_xy() for p in ax.patches] == [(4.0, 8.0), (50.0, 10.0)]
    assert [t.get_text() for t in ax.texts] == ["dog 0.90", "cat 0.40"]
    plt.close("all")


def test_attention_maps_cover_the_image_and_skip_missing_channels():
    image = torch.zeros(3, 64, 96)
    weights = torch.softmax(torch.randn(24, 24), -1)  # a 4 x 6 grid at stride 16
    fig = plot_encoder_attention(image, weights, (4, 6), pixels=[(10, 10), (63, 95)], stride=16)
    assert len(fig.axes) == 3
    heat = fig.axes[2].images[-1]
    assert heat.get_extent() == [0, 96, 64, 0]
    assert torch.allclose(torch.as_tensor(heat.get_array().data), weights[3 * 6 + 5].reshape(4, 6))
    fig = plot_decoder_attention(image, torch.softmax(torch.randn(5, 24), -1), (4, 6), [0, 3],
                                 boxes=torch.rand(5, 4) * 50, labels=list("abcde"))
    assert [ax.get_title() for ax in fig.axes] == ["query 0: a", "query 3: d"]
    fig = plot_position_encoding(torch.randn(32, 5, 5), channels=(0, 16, 40))
    assert len(fig.axes) == 2
    plt.close("all")
