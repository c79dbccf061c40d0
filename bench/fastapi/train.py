"""Train the source design's two model versions as joblib files, the way the ONNX fixtures are
trained (serving/fixtures/generate.py): make_classification(n_samples=2000, n_features=20,
random_state=0) as float32, the last 1,000 rows for training.

  v1: LogisticRegression(max_iter=1000)                                  = fixtures/logreg.onnx
  v2: RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0) = fixtures/rf.onnx

Usage: python train.py OUT_DIR   (writes OUT_DIR/model_v1.pkl and OUT_DIR/model_v2.pkl)
"""

import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

N_FEATURES = 20
N_TEST = 1000


def main(out: Path) -> None:
    x, y = make_classification(n_samples=2000, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    train = slice(N_TEST, None)
    v1 = LogisticRegression(max_iter=1000).fit(x[train], y[train])
    v2 = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(
        x[train], y[train]
    )
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(v1, out / "model_v1.pkl")
    joblib.dump(v2, out / "model_v2.pkl")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
