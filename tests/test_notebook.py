"""examples/*.ipynb run top to bottom (nbclient) on this interpreter: every cell asserts what it
shows, so a notebook that stops being true fails here. Stored without outputs."""

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the test extra: pip install -e '.[test]'")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KERNEL = "grok-test-python"


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    assert [n.name for n in NOTEBOOKS] == ["from_sweep_to_insight.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.fixture
def this_python(tmp_path, monkeypatch) -> str:
    """A kernel spec that starts this interpreter (the venv's, where grok is installed), found
    through JUPYTER_PATH in a temporary folder: nothing installed for the user, and no other
    Python's kernel can be picked up."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "grok tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # nothing written to ~
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, this_python):
    pytest.importorskip("transformer_lens", reason="the interp extra: pip install -e '.[interp]'")
    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "work"  # the kernel's working folder: the notebook's outputs/ go there
    work.mkdir()
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))  # which Python ran it
    client = nbclient.NotebookClient(nb, kernel_name=this_python, timeout=600,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # CellExecutionError (the cell and its traceback) on any cell's error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)  # every cell ran
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    ran_in = [c for c in code if "records = grok.run(" in c.source]
    assert ran_in and any("runs in" in o.get("text", "") for o in ran_in[0].outputs)
    assert (work / "outputs" / "sweeps" / "from_sweep_to_insight").is_dir()
    assert code[-1].outputs[0]["text"].strip() == sys.executable
