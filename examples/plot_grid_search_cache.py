"""
Grid-searching the fine-tuning depth with the frozen-layer cache
================================================================

:class:`~skconvnet.FineTunedConvClassifier`'s ``unfreeze`` (how many layers at the top of the
base are trained) and ``learning_rate`` are plain parameters, so
:class:`~sklearn.model_selection.GridSearchCV` chooses them. With ``cache="memory"`` the layers
that stay frozen run once per image for the whole search instead of once per epoch, fold and
grid point.
"""

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skconvnet import FineTunedConvClassifier, clear_memory_cache
from skconvnet.testing import photo_patches

X, y, _ = photo_patches(n_per_photo=45, size=40, seed=1)

clf = FineTunedConvClassifier("efficientnet_lite0", input_size=96, head_units=0,
                              warmup_epochs=3, epochs=2, warmup_learning_rate=1e-3,
                              cache="memory", random_state=0)
grid = {"unfreeze": [0, 2, 6], "learning_rate": [1e-4, 1e-3]}
search = GridSearchCV(clf, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0))
clear_memory_cache()
start = time.perf_counter()
search.fit(X, y)
print(f"{len(search.cv_results_['params']) * 3 + 1} fits in {time.perf_counter() - start:.0f} s")
print("best:", search.best_params_, f"score {search.best_score_:.3f}")

# %%
# Every grid point's held-out score and fit time.
results = pd.DataFrame(search.cv_results_)[
    ["param_unfreeze", "param_learning_rate", "mean_test_score", "std_test_score",
     "mean_fit_time"]]
print(results.to_string(index=False))

fig, ax = plt.subplots(figsize=(5, 3))
for rate, rows in results.groupby("param_learning_rate"):
    ax.errorbar(rows["param_unfreeze"], rows["mean_test_score"], rows["std_test_score"],
                marker="o", capsize=3, label=f"learning_rate={rate:g}")
ax.set_xlabel("unfreeze (layers with weights, from the top)")
ax.set_ylabel("mean CV accuracy")
ax.legend()
fig.tight_layout()
