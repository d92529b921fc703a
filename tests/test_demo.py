"""The main job: `skconvnet demo`, reduced to a few photos and epochs."""

import numpy as np
import pytest
from PIL import Image

from skconvnet.demo import DemoConfig, run_demo, unfreeze_choices


def test_unfreeze_choices_start_at_the_last_block_boundaries():
    assert unfreeze_choices("tiny", input_size=16) == [1, 2]
    assert unfreeze_choices("vgg16", input_size=32) == [3, 6]


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    from skconvnet.datasets import DatasetUnavailableError

    lines = []
    config = DemoConfig(limit=60, folds=2, warmup_epochs=1, epochs=1, input_size=96,
                        output_dir=str(tmp_path))
    try:
        result = run_demo(config, log=lines.append)
    except DatasetUnavailableError as exc:
        pytest.skip(str(exc))
    assert [row["key"] for row in result["rows"]] == ["raw", "random", "features", "frozen",
                                                      "finetuned", "defaults"]
    for row in result["rows"]:
        assert len(row["scores"]) == 2 and ((0 <= row["scores"]) & (row["scores"] <= 1)).all()
        assert row["fit"] > 0 and row["predict"] > 0
    assert all(set(best) == {"unfreeze", "learning_rate"} for best in result["rows"][4]["notes"])
    table = result["table"].splitlines()
    assert len(table) == 2 + 6 and table[2].startswith("| raw 32x32 pixels")
    assert table[-1].startswith("| FineTunedConvClassifier with its defaults, no search |")
    assert any("fold 2/2" in line for line in lines)  # progress while it runs
    for picture in result["pictures"]:
        pixels = np.asarray(Image.open(picture).convert("L"))
        assert pixels.shape[0] > 100 and pixels.std() > 10
    assert len(result["pictures"]) == 2
