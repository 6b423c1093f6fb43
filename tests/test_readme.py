"""The README's promise: its set-up, main and test commands are the ones the project runs."""

from tests.conftest import REPO_ROOT


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    readme = (REPO_ROOT / "README.md").read_text()
    (command,) = [line for line in ci if "pytest" in line and not line.startswith("#")]
    assert command.strip() in readme
    assert "bash scripts/setup.sh" in readme and "bash scripts/setup.sh" in ci


def test_readme_main_command_names_an_existing_recipe():
    readme = (REPO_ROOT / "README.md").read_text()
    for name in ["image-fitting.yaml", "vsd.yaml", "prolificdreamer.yaml", "dreamfusion-sd.yaml", "vsd-image.yaml"]:
        assert name in readme
        assert (REPO_ROOT / "configs" / name).is_file()


def test_readme_main_job_is_the_toy_vsd_recipe_on_the_committed_prior():
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block[0].startswith("bash scripts/setup.sh")
    assert block[1].startswith(".venv/bin/python launch.py --config configs/toy/vsd.yaml --train")
    assert (REPO_ROOT / "configs" / "toy" / "vsd.yaml").is_file()
    assert (REPO_ROOT / "load" / "toy-sd" / "model_index.json").is_file()
