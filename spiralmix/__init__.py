"""spiralmix: mixup regularization on the two-spiral problem."""

import warnings

# pytorch_lightning 2.6 warns about a torch API of its own at import; users cannot act on it.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

__version__ = "0.1.0"
