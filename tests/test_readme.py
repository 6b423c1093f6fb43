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
