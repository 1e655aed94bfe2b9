"""Sessions: `nox -s tests` (everything, the README's test command), `nox -s demo` (the narrated
text-to-video example), `nox -s package` (each package alone in a fresh venv with only aiprod-core),
`nox -s lint`, `nox -s bench` (the benchmarks against their peers, small sizes).

Every session runs in its own nox-managed virtualenv under .nox/ and installs all it needs there:
nothing lands in the Python that runs nox, and nothing there is relied on (CI starts from a fresh venv,
`.ci/run`). `tests` and `demo` keep their virtualenv between runs (`reuse_venv`), so only the first run
downloads torch; pip still re-installs the packages each time, and `--reuse-venv=never` starts afresh.
"""

from __future__ import annotations

import re
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
# Every package's `test` extra is installed with it. Besides, the full test run installs these optional
# extras so that the tests needing them run in CI; without them those tests skip with a reason (the
# `package` sessions check that). aiprod-tts[espeak] (phonemizer) is only of use where the system
# package espeak-ng is installed (.ci/run installs it). Not installed: benchmark extras (transformers,
# diffusers), `browser` (selenium + a system chromium).
TEST_EXTRAS = {"aiprod-core": ["quanto"], "aiprod-pipelines": ["asr", "serve"], "aiprod-tts": ["espeak"]}
TEMPLATE = "templates/aiprod-plugin"
TEST_ENV = {"AIPROD_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
nox.options.sessions = ["tests"]


def present(packages: list[str]) -> list[str]:
    return [p for p in packages if (ROOT / "packages" / p / "pyproject.toml").is_file()]


def editable(paths: list[str]) -> list[str]:
    return [arg for p in paths for arg in ("-e", p)]


def extras_of(path: str) -> list[str]:
    """The optional-dependency groups a pyproject.toml declares (read without tomllib: Python 3.10 runs nox too)."""
    text = (ROOT / path / "pyproject.toml").read_text()
    section = text.partition("[project.optional-dependencies]")[2].partition("\n[")[0]
    return re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section, re.M)


def with_extras(path: str, extras: list[str]) -> str:
    """`path[test,...]`: the given extras that the package declares, its `test` extra always."""
    chosen = [e for e in ["test", *extras] if e in extras_of(path)]
    return f"{path}[{','.join(chosen)}]" if chosen else path


@nox.session(reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Every package (editable, with its optional test extras) + the template in one venv; all tests."""
    paths = [with_extras(f"packages/{p}", TEST_EXTRAS.get(p, [])) for p in present(PACKAGES)]
    session.install(*editable(paths + [with_extras(TEMPLATE, [])]), "pytest")
    session.run("aiprod", "plugins")
    session.run("python", "-m", "pytest", "-q", "-ra", *session.posargs, env=TEST_ENV)


@nox.session
@nox.parametrize("package", present(PACKAGES) + ["template"])
def package(session: nox.Session, package: str) -> None:
    """One package alone: aiprod-core + that package in a fresh venv (undeclared imports fail here)."""
    path = TEMPLATE if package == "template" else f"packages/{package}"
    paths = [with_extras(path, [])] if path == "packages/aiprod-core" else ["packages/aiprod-core", with_extras(path, [])]
    session.install("pytest", *editable(paths))
    session.run("aiprod", "plugins")
    session.run("python", "-m", "pytest", "-q", "-ra", f"{path}/tests", *session.posargs,
                env={"AIPROD_STRICT_PLUGINS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """Every script in benchmarks/ against its peer, at small sizes (CPU, minutes): tables on stdout,
    JSON under out/bench/. The peers (transformers' EnCodec/DAC/SpeechT5HifiGan, diffusers' HunyuanVideo
    and Wan VAE) are installed here only: they are benchmark-only dependencies."""
    session.install(*editable([f"packages/{p}" for p in present(PACKAGES)]), "transformers", "diffusers")
    out = ROOT / "out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    small_shdt = ('{"hidden_size": 128, "num_heads": 2, "rope_axes_dim": [8, 28, 28], "depth_double": 1, '
                  '"depth_single": 1, "text_dim": 64}')
    runs = {
        "audio_codec": ["--seconds", "1", "--repeats", "1", "--no-dac"],
        "tts": ["--preset", "tiny", "--repeats", "2"],
        "shdt": ["--width", "128", "--heads", "2", "--double", "1", "--single", "2", "--text-dim", "64",
                 "--text-len", "16", "--latent", "2", "16", "16", "--iters", "2", "--repeats", "2"],
        "hwvae": ["--skip-large", "--shape", "5", "64", "64", "--repeats", "1"],
        "quantize": ["--config", small_shdt, "--shard", "16MB", "--backends", "torch-fp8"],
    }
    for name, args in runs.items():
        session.run("python", f"benchmarks/{name}.py", *args, "--json", str(out / f"{name}.json"),
                    env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})


@nox.session(reuse_venv=True)
def demo(session: nox.Session) -> None:
    """Install the packages and run the text-to-video-with-narration example (out/text_to_video.mp4).

    Extra arguments go to `aiprod run` (default: --overwrite), e.g. `nox -s demo -- --overwrite --set prompt="..."`.
    """
    session.install(*editable([f"packages/{p}" for p in present(PACKAGES)]))
    args = session.posargs or ["--overwrite"]
    session.run("aiprod", "run", "examples/text_to_video.yaml", *args)
