"""Sessions: `nox -s tests` (everything, the README's test command), `nox -s package`
(each package alone in a fresh venv with only aiprod-core), `nox -s lint`, `nox -s demo`."""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = [
    "aiprod-core",
    "aiprod-hwvae",
    "aiprod-audio",
    "aiprod-tts",
    "aiprod-textenc",
    "aiprod-shdt",
    "aiprod-upsampler",
    "aiprod-pipelines",
]
TEMPLATE = "templates/aiprod-plugin"
nox.options.sessions = ["tests"]


def present(packages: list[str]) -> list[str]:
    return [p for p in packages if (ROOT / "packages" / p / "pyproject.toml").is_file()]


def editable(paths: list[str]) -> list[str]:
    return [arg for p in paths for arg in ("-e", p)]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Install every package (editable) into the running environment and run all tests."""
    session.run("python", "-m", "pip", "install", "-q", "torch", "torchaudio")
    paths = [f"packages/{p}" for p in present(PACKAGES)] + [TEMPLATE]
    # pocketsphinx: the offline ASR of `aiprod eval` (aiprod-pipelines[asr]), tested on espeak-ng speech
    session.run("python", "-m", "pip", "install", "-q", *editable(paths), "pytest", "pocketsphinx")
    env = {"AIPROD_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    session.run("python", "-m", "pytest", "-q", "-ra", *session.posargs, env=env)


@nox.session
@nox.parametrize("package", present(PACKAGES) + ["template"])
def package(session: nox.Session, package: str) -> None:
    """One package alone: aiprod-core + that package in a fresh venv (undeclared imports fail here)."""
    path = TEMPLATE if package == "template" else f"packages/{package}"
    session.install("pytest", *editable(["packages/aiprod-core", path]) if path != "packages/aiprod-core"
                    else editable([path]))
    session.run("aiprod", "plugins")
    session.run("python", "-m", "pytest", "-q", f"{path}/tests", *session.posargs,
                env={"AIPROD_STRICT_PLUGINS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """Install everything and run the text-to-video-with-narration example on the CPU (out/text_to_video.mp4)."""
    session.run("python", "-m", "pip", "install", "-q", "torch", "torchaudio")
    paths = [f"packages/{p}" for p in present(PACKAGES)]
    session.run("python", "-m", "pip", "install", "-q", *editable(paths))
    args = session.posargs or ["--overwrite"]
    session.run("aiprod", "run", "examples/text_to_video.yaml", *args)
