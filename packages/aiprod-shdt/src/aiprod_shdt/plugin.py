"""aiprod hookimpls of aiprod-shdt (heavy imports stay inside the functions)."""

from aiprod_core import ComponentSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_shdt.presets import PRESETS

    return [
        ComponentSpec(
            kind="video-denoiser",
            name="shdt",
            factory="aiprod_shdt.model:SHDT",
            config_model="aiprod_shdt.config:SHDTConfig",
            shapes="aiprod_shdt.config:state_dict_shapes",
            presets=PRESETS,
            description="SHDT: dual-stream then single-stream DiT, 3D RoPE, AdaLN-zero, rectified flow (v1: 19B)",
        ),
        *[
            ComponentSpec(
                kind="sampler",
                name=name,
                factory=f"aiprod_shdt.samplers:{cls}",
                config_model="aiprod_shdt.samplers:SamplerConfig",
                presets={"default": {}},
                description=desc,
            )
            for name, cls, desc in (
                ("euler", "EulerSampler", "rectified-flow Euler, token-count shifted schedule (1 call a step)"),
                ("heun", "HeunSampler", "rectified-flow Heun, 2nd order (2 calls a step)"),
                ("dpm++2m", "DPMSolverPP2MSampler", "DPM-Solver++(2M) multistep, 2nd order (1 call a step)"),
            )
        ],
    ]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="shdt", config_model="aiprod_shdt.train:SHDTTrainConfig", run="aiprod_shdt.train:train")]


@hookimpl
def aiprod_register_commands(cli):
    from aiprod_shdt.plan import register

    register(cli)
