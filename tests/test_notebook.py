"""The quickstart notebook runs top to bottom on its tiny dataset (so it never rots)."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
# Smaller than the notebook's own toy run (papermill's convention: a cell after the one tagged
# "parameters" overrides it): every cell still runs, on 16 galaxies, 2 epochs and a short attack.
TINY_PARAMETERS = """n_spiral, n_elliptical, n_merger = 8, 5, 3
epochs = 2
attack_images, attack_population, attack_generations = 4, 20, 2"""


def with_parameters(notebook, source: str):
    """The notebook with a cell running `source` right after its parameters cell."""
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "the notebook needs one cell tagged 'parameters'"
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    return notebook


def test_quickstart_notebook_executes():
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), TINY_PARAMETERS)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "galaxies per class: {'spiral': 8, 'elliptical': 5, 'merger': 3}" in text  # the parameters took
    assert "| Reg | Accuracy |" in text  # the metrics table was printed
    assert "dE(Y10, 1P)" in text
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # preview, church window, isomap
